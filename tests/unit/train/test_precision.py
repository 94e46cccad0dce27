"""Mixed precision: R1 and path length under bf16 autocast stay close to fp32; bf16/fp16
training runs end to end; StyleGAN2's scheme puts only the top blocks in reduced precision."""
from __future__ import annotations

import pytest
import torch

from bigtrain.losses.regularizers import path_lengths, r1_penalty
from bigtrain.models.common.layers import set_reduced_precision
from bigtrain.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from bigtrain.ops.modconv import set_epilogue
from conftest import run_cli, tiny_config, write_config

R1_RTOL = 0.05  # bf16 keeps 8 mantissa bits; the stated tolerance for R1 and path length


def _nets(res=32):
    torch.manual_seed(0)
    G = StyleGAN2Generator(StyleGAN2Generator.Config(z_dim=32, w_dim=32, mapping_layers=2, channel_base=512,
                                                     channel_max=64), res, 3)
    D = StyleGAN2Discriminator(StyleGAN2Discriminator.Config(channel_base=512, channel_max=64), res, 3)
    return G, D


def test_r1_and_path_length_under_bf16_autocast_match_fp32():
    G, D = _nets()
    real = torch.randn(8, 3, 32, 32)
    out = {}
    for prec in ("fp32", "bf16"):
        x = real.clone().requires_grad_(True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else torch.autocast("cpu", enabled=False)
        with ctx:
            r1 = r1_penalty(x, D(x)).mean()
            torch.manual_seed(1)
            img, ws = G(torch.randn(4, 32), return_ws=True)
            pl = path_lengths(img, ws, torch.ones_like(img)).mean()
        assert r1.dtype == torch.float32 and pl.dtype == torch.float32
        out[prec] = (r1.item(), pl.item())
    for (a, b) in zip(out["fp32"], out["bf16"]):
        assert abs(a - b) <= R1_RTOL * abs(a), out


def test_stylegan2_scheme_reduces_only_the_top_blocks():
    G, D = _nets()
    assert set_reduced_precision(G, torch.bfloat16, 2, 32) == [16, 32]
    assert set_reduced_precision(D, torch.bfloat16, 2, 32) == [16, 32]
    img = G(torch.randn(2, 32))
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert D(img).dtype == torch.float32


@pytest.mark.parametrize("epilogue", ["fused", "separate"])
def test_reduced_precision_blocks_keep_16_bit_activations_between_layers(epilogue):
    # What the scheme is for: in G's 16-bit blocks every layer's output (what the next layer reads and
    # what the backward keeps) is 16-bit, as in NVlabs' fp16 blocks; the other blocks are float32.
    # Before session 20 the demodulation's float32 coefficients promoted each output to float32, which
    # train.modconv_epilogue=separate keeps for the benchmark's comparison.
    G, _ = _nets()
    set_reduced_precision(G, torch.bfloat16, 2, 32)
    out = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o.dtype))
             for name, m in G.synthesis.named_modules() if type(m).__name__ == "SynthesisLayer"]
    set_epilogue(epilogue)
    try:
        G.train()(torch.randn(2, 32))
    finally:
        set_epilogue("fused")
    for h in hooks:
        h.remove()
    top = ("blocks.b16.", "blocks.b32.")
    want = {n: torch.bfloat16 if n.startswith(top) and epilogue == "fused" else torch.float32 for n in out}
    assert out and out == want


def test_the_epilogue_setting_reaches_the_op_and_unknown_ones_are_refused(tmp_path):
    from bigtrain.ops import modconv
    with pytest.raises(ValueError, match="'fast'.*'fused', 'separate'"):
        set_epilogue("fast")
    cfg = tiny_config(tmp_path / "run", train={"modconv_epilogue": "separate"})
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer
    try:
        Trainer(load_config(write_config(tmp_path / "c.yaml", cfg), [], TrainConfig))
        assert modconv._epilogue == "separate"
    finally:
        set_epilogue("fused")


@pytest.mark.parametrize("precision,extra", [("bf16", {}), ("fp16", {}), ("bf16", {"reduced_precision_res": 1})])
def test_reduced_precision_training_runs_and_resumes(tmp_path, precision, extra):
    cfg = tiny_config(tmp_path / "run", train={"precision": precision, **extra})
    path = write_config(tmp_path / "c.yaml", cfg)
    r = run_cli(["train", path])
    assert r.returncode == 0, r.stderr
    r = run_cli(["train", path, "train.total_kimg=0.08"])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr
    state = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["strategy"]["G"]["module"].values() if v.is_floating_point())
    if precision == "fp16":
        assert "grad_scaler" in state["strategy"]["G"] and "grad_scaler" in state["strategy"]["D"]
