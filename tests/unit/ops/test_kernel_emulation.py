"""The CUDA kernels' own source, host and device code, run on the CPU through the emulation in
kernels/cpu_emulation.h (`bigtrain kernels --check --emulate`): the whole parity table, three
dtypes x forward, backward and double backward, must hold against the float64 reference. A copy
of the sources with one bug per kernel (an off-by-one row in upfirdn2d, the elu/selu second
derivative at 0 that the first emulated run found, a warp reduction that drops half its lanes in
modconv) must fail it. Needs a C++ compiler, no GPU; each build takes about 20 s on 2 cores."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bigtrain.ops import _build
from conftest import kernel_emulation

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def _kernels_cli(cache: Path, sources: Path | None = None, build_only: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, BIGTRAIN_KERNEL_CACHE=str(cache), PYTHONPATH=str(REPO))
    if sources is not None:
        env["BIGTRAIN_KERNEL_SOURCES"] = str(sources)
    return subprocess.run([sys.executable, "-m", "bigtrain", "kernels", "--build-only" if build_only else "--check",
                           "--emulate"], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """`bigtrain kernels --check --emulate` on an empty cache (once per pytest run: the GPU report's
    toy loads the same build): (the cache, the run)."""
    folder = kernel_emulation(tmp_path_factory)
    run = subprocess.CompletedProcess([], int((folder / "check.rc").read_text()), (folder / "check.out").read_text(),
                                      (folder / "check.err").read_text())
    return folder / "cache", run


def test_kernel_sources_pass_the_parity_table_on_the_cpu_emulation(first_run):
    cache, r = first_run
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "emulation of upfirdn2d, bias_act, modconv: compiled" in r.stdout
    assert "342 of 342 checks within their limits" in r.stdout
    table = [line for line in r.stdout.splitlines() if line.startswith(("upfirdn2d ", "bias_act ", "modconv "))]
    assert len(table) == 342 and all(" yes " in line for line in table)
    # --json: the same rows for a program (`bigtrain bench gpu` reads them).
    rows = json.loads((cache.parent / "check.json").read_text())
    assert [(d["kernel"], d["case"], d["dtype"], d["order"]) for d in rows] == [
        (line[:10].strip(), line[11:35].strip(), line[36:45].strip(), line[46:62].strip()) for line in table]
    assert all(d["ok"] and d["rel_err"] <= d["threshold"] for d in rows)
    # The second run finds the build in the cache.
    r = _kernels_cli(cache, build_only=True)
    assert r.returncode == 0 and "loaded from the cache" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert "compiled" not in r.stdout and "checks within their limits" not in r.stdout


def _sabotage(src: Path, file: str, old: str, new: str) -> None:
    text = (src / file).read_text()
    assert text.count(old) == 1, (file, old)
    (src / file).write_text(text.replace(old, new))


def test_a_bug_in_any_kernel_source_fails_the_table(tmp_path):
    src = tmp_path / "kernels"
    shutil.copytree(REPO / "kernels", src)
    # One off-by-one row in each of upfirdn2d's kernels: the generic one (2-D filters) and the
    # tiled one (1-D filters).
    _sabotage(src, "upfirdn2d.cu", "const int ky = oy * downy + jy - pady0;",
              "const int ky = oy * downy + jy - pady0 + 1;")
    _sabotage(src, "upfirdn2d.cu", "ky0 = oy0 * DOWN - p.pad_y0;", "ky0 = oy0 * DOWN - p.pad_y0 + 1;")
    # The NHWC kernel reads one row too low; channels_last bias_act takes every element's bias from
    # its vector's first channel.
    _sabotage(src, "upfirdn2d.cu", "const int ky = ky0 + jy;", "const int ky = ky0 + jy + 1;")
    _sabotage(src, "bias_act.cu", "u < 0.f ? scale * a * e : 0.f", "scale * a * e")
    _sabotage(src, "bias_act.cu", "bias[k] = b ? b[nn * b_nstride + c] : 0.f;",
              "bias[k] = b ? b[i % b_size] : 0.f;")
    # The modulated convolution's epilogue: an NCHW vector takes its first pixel's addend for all four;
    # with the channels innermost, every sample takes the first sample's scale.
    _sabotage(src, "bias_act.cu", "ad[k] = a ? a[nn * a_nstride + p + k] : 0.f;",
              "ad[k] = a ? a[nn * a_nstride + p] : 0.f;")
    _sabotage(src, "bias_act.cu", "sc[k] = s ? s[nn * b_size + c] : 1.f;",
              "sc[k] = s ? s[c] : 1.f;")
    # A per-sample bias (BigGAN's conditional BN): in NCHW planes every sample takes the first sample's.
    _sabotage(src, "bias_act.cu", "const float bk = b ? b[nn * b_nstride + c] : 0.f,",
              "const float bk = b ? b[c] : 0.f,")
    # The second stage of the block reduction skips one shuffle step, so lane 0 misses the third
    # warp's partial sum (the cases' 8x3x3 weights take three warps of the 256 threads).
    _sabotage(src, "modconv.cu", "v += __shfl_down_sync(0xffffffff, v, off);",
              "v += off != 2 ? __shfl_down_sync(0xffffffff, v, off) : 0.f;")
    r = _kernels_cli(tmp_path / "cache", sources=src)
    assert r.returncode == 1, r.stdout[-6000:] + r.stderr[-3000:]
    failed = [line.split() for line in r.stdout.splitlines() if " NO " in line]
    assert {f[0] for f in failed} == {"upfirdn2d", "bias_act", "modconv"}, r.stdout
    # Each bug shows where it should: every upfirdn2d case forward, through either kernel; selu's
    # second derivative.
    assert {f[1] for f in failed if f[0] == "upfirdn2d" and "forward" in f}.issuperset({"up2", "down2", "1-D", "6",
                                                                                        "2-D", "up(2,1)"})
    assert any(f[:2] == ["bias_act", "selu"] and f[3:5] == ["double", "backward"] for f in failed), failed
    nhwc = {" ".join(f[1:f.index("float32")]) for f in failed if "float32" in f and "forward" in f}
    assert {"NHWC up2 1-D, vec", "NHWC 1-D pad, 3 ch", "NHWC 6 taps down2 flip", "lrelu clamp NHWC, 8 ch",
            "lrelu [N, C], vec4", "lrelu *s +a", "lrelu *s +a NHWC", "relu *s b[N,C]", "relu *s b[N,C] 1 elem"
            } <= nhwc, nhwc


def test_impl_cuda_takes_cpu_tensors_only_inside_the_emulation(first_run, monkeypatch):
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.ops import bias_act, upfirdn2d
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        bias_act(x, act="lrelu", impl="cuda")
    from bigtrain.ops._cuda import kernel_calls
    before = kernel_calls()
    with _build.emulation() as module:
        assert module.bigtrain_cached  # built by first_run
        y = bias_act(x, act="lrelu", impl="cuda")
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        up = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="cuda")
        bias_act(x, act="lrelu", impl="auto")  # auto is the reference in the emulation: not counted
    torch.testing.assert_close(y, bias_act(x, act="lrelu", impl="ref"))
    torch.testing.assert_close(up, upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="ref"))
    # The calls that ran a kernel are counted per op (`bench gpu` reports which a row used).
    after = kernel_calls()
    assert {op: n - before.get(op, 0) for op, n in after.items() if n > before.get(op, 0)} == {"bias_act": 1,
                                                                                              "upfirdn2d": 1}
    assert not _build.emulating()
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        bias_act(x, act="lrelu", impl="cuda")


def test_host_side_refuses_an_operand_on_another_device_or_of_the_wrong_shape(first_run, monkeypatch):
    # On a GPU a bias on the CPU or another GPU would be a bad pointer in the kernel; the host side
    # names it instead. Here the emulation's device is the CPU and "another" the meta device.
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    x = torch.randn(2, 3, 4, 4)
    with _build.emulation() as module:
        op = module.bias_act.bias_act
        with pytest.raises(RuntimeError, match=r"bias_act: b must be on x's device \(cpu\), not meta"):
            op(x, torch.zeros(3, device="meta"), None, None, None, None, 1, 2, 0, 0.2, 1.0, -1.0)
        with pytest.raises(RuntimeError, match=r"bias_act: s must be on x's device \(cpu\), not meta"):
            op(x, None, torch.ones(2, 3, device="meta"), None, None, None, 1, 2, 0, 0.2, 1.0, -1.0)
        with pytest.raises(RuntimeError, match=r"bias_act: a must be on x's device \(cpu\), not meta"):
            op(x, None, None, torch.zeros(2, 1, 4, 4, device="meta"), None, None, 1, 2, 0, 0.2, 1.0, -1.0)
        with pytest.raises(RuntimeError, match=r"bias_act: dy must be on x's device \(cpu\), not meta"):
            op(x, torch.zeros(3), None, None, torch.empty(2, 3, 4, 4, device="meta"), None, 1, 2, 1, 0.2, 1.0, -1.0)
        # A wrongly shaped scale or addend is refused, not read past its end.
        with pytest.raises(RuntimeError, match=r"bias_act: s must be \[N, C\]"):
            op(x, None, torch.ones(3), None, None, None, 1, 2, 0, 0.2, 1.0, -1.0)
        with pytest.raises(RuntimeError, match=r"bias_act: a must be \[N or 1, 1, H, W\]"):
            op(x, None, None, torch.zeros(2, 3, 4, 4), None, None, 1, 2, 0, 0.2, 1.0, -1.0)
        assert op(x, torch.zeros(3), None, None, None, None, 1, 2, 0, 0.2, 1.0, -1.0).shape == x.shape


def test_tiled_upfirdn2d_keeps_an_inf_pixel_out_of_rows_it_does_not_reach(first_run, monkeypatch):
    # The run-time-taps kernel holds a 16-tap register window; taps past a 5-tap filter's must not
    # multiply window values (0 * Inf is NaN).
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.ops import setup_filter, upfirdn2d
    x = torch.zeros(1, 1, 20, 20)
    x[0, 0, 9, 10] = float("inf")  # window position 11: read by output row 4's strip, not by row 4
    f = setup_filter([1, 2, 3, 2, 1])
    with _build.emulation():
        y = upfirdn2d(x, f, padding=2, impl="cuda")
    ref = upfirdn2d(x, f, padding=2, impl="ref")
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())


def test_channels_last_stays_channels_last_through_the_kernels(first_run, monkeypatch):
    # train.channels_last: the kernels take NHWC activations as they are and give NHWC back, forward
    # and backward, so that no layout conversion runs around them.
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.ops import bias_act, setup_filter, upfirdn2d
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    b = torch.randn(8)
    f = setup_filter([1, 3, 3, 1])
    with _build.emulation():
        up = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="cuda")
        y = bias_act(up, b, act="lrelu", impl="cuda")
        (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    for t in (up, y, gx):
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    ref = bias_act(upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="ref"), b, act="lrelu", impl="ref")
    torch.testing.assert_close(y, ref)


def test_bench_kernels_cases_run_their_kernels_and_match_the_reference(first_run, monkeypatch):
    # `bigtrain bench kernels` times these on a GPU only; here each case (the NHWC ones too) runs
    # through the kernels' source on the emulation, at a small size, so that the GPU run cannot
    # meet a broken case first.
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.bench.kernels import kernel_cases
    cases = kernel_cases(16, batch=2, device="cpu", channels=8)
    assert {name for name, *_ in cases} >= {"upfirdn2d up2 NHWC", "upfirdn2d down2 NHWC", "bias_act lrelu NHWC",
                                           "bias_act lrelu *s +a", "bias_act relu *s b[N,C]"}
    for name, fn, inputs, nbytes in cases:
        with _build.emulation():
            out = fn("cuda", *inputs)
        torch.testing.assert_close(out, fn("ref", *inputs), rtol=1e-4, atol=1e-4, msg=name)
        assert out.is_contiguous(memory_format=torch.channels_last) == ("NHWC" in name), name
        assert nbytes > 0


BARRIER_PROGRAM = r"""
#define BIGTRAIN_CPU_EMULATION
#include "cpu_emulation.h"
#include <cstdio>
#include <vector>

__global__ void block_sums(const float* x, float* out) {  // shared memory, one barrier
  __shared__ float s[64];
  s[threadIdx.x] = x[blockIdx.x * 64 + threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = 0.f;
    for (int i = 0; i < 64; ++i) v += s[i];
    out[blockIdx.x] = v;
  }
}

__global__ void warp_sums(const float* x, float* out) {
  float v = x[threadIdx.x];
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffff, v, off);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

__global__ void divergent(float* out) {  // half the block skips the barrier
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void failing(float* out) {  // one thread fails a check before the barrier
  BT_EMU_CHECK(threadIdx.x != 40);
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

int main() {
  std::vector<float> x(128), out(128);
  for (int i = 0; i < 128; ++i) x[i] = float(i);
  BT_LAUNCH_SYNC(block_sums, dim3(2), dim3(64), nullptr)(x.data(), out.data());
  std::printf("block_sums %g %g\n", out[0], out[1]);
  BT_LAUNCH_SYNC(warp_sums, dim3(1), dim3(64), nullptr)(x.data(), out.data());
  std::printf("warp_sums %g %g\n", out[0], out[1]);
  for (auto kernel : {divergent, failing}) {
    try {
      BT_LAUNCH_SYNC(kernel, dim3(1), dim3(64), nullptr)(out.data());
      std::printf("no error\n");
    } catch (const std::exception& e) {
      std::printf("error: %s\n", e.what());
    }
  }
  BT_LAUNCH_SYNC(block_sums, dim3(2), dim3(64), nullptr)(x.data(), out.data());
  std::printf("block_sums again %g %g\n", out[0], out[1]);
}
"""


def test_emulated_barriers_shuffles_deadlocks_and_failures(tmp_path):
    """cpu_emulation.h's synchronising launches on their own, in a small C++ program: a
    shared-memory block sum and warp shuffles give the sums; a __syncthreads that half the block
    skips is reported as a deadlock (it used to hang), a failed check in one thread ends the launch
    with that check's message, and a launch after both works."""
    (tmp_path / "barriers.cpp").write_text(BARRIER_PROGRAM)
    torch_dir = Path(torch.__file__).parent
    build = subprocess.run(["c++", "-std=c++20", "-O1", f"-I{REPO / 'kernels'}", "-isystem", str(torch_dir / "include"),
                            "barriers.cpp", f"-L{torch_dir / 'lib'}", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}",
                            "-o", "barriers"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    r = subprocess.run([str(tmp_path / "barriers")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("block_sums", "warp_sums", "error", "no error"))]
    assert lines[:2] == ["block_sums 2016 6112", "warp_sums 496 1520"]
    assert lines[2].startswith("error: emulation: deadlock: the block's threads wait at different barriers")
    assert lines[3] == "error: emulation: index check failed: threadIdx.x != 40"
    assert lines[4] == "block_sums again 2016 6112"


def _auto_takes_the_kernels(monkeypatch, *ops: str) -> None:
    """Inside emulation(), impl="auto" of these ops (what the models call) runs the kernels' source,
    as it would on a GPU; on the CPU auto is otherwise the reference."""
    for name in ops:
        module = sys.modules[f"bigtrain.ops.{name}"]
        real = module.resolve_impl
        monkeypatch.setattr(module, "resolve_impl",
                            lambda impl, x, op, real=real: real("cuda" if impl == "auto" else impl, x, op))


@pytest.mark.parametrize("noise_mode, channels_last", [("random", False), ("const", False), ("random", True)])
def test_a_stylegan2_generator_on_the_kernels_matches_the_reference_to_second_order(first_run, monkeypatch,
                                                                                    noise_mode, channels_last):
    # The whole generator as training runs it (the activation-scaling path, whose layers hand the
    # demodulation, noise, bias and activation to bias_act's one pass), on the kernels' source:
    # the image, G's gradients, and the path-length penalty's gradients (second order through every
    # kernel), against the reference. The noise is drawn from the same seed on both sides.
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.losses.regularizers import path_lengths
    from bigtrain.models.stylegan2 import StyleGAN2Generator
    from bigtrain.ops._cuda import kernel_calls
    torch.manual_seed(0)
    cfg = StyleGAN2Generator.Config(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8, conv_clamp=4)
    G = StyleGAN2Generator(cfg, 8, 3).train()
    if channels_last:  # train.channels_last: the NHWC kernel paths, the epilogue's channels-innermost lookups
        G = G.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    z = torch.randn(2, 8)

    def run(impl):
        torch.manual_seed(1)
        img, ws = G(z, noise_mode=noise_mode, return_ws=True)
        grads = torch.autograd.grad((img * torch.randn_like(img)).sum(), G.parameters(), retain_graph=True)
        pl = path_lengths(img, ws, torch.randn_like(img)).sum()
        pl_grads = torch.autograd.grad(pl, G.parameters(), allow_unused=True)
        return img, grads, pl_grads

    ref = run("ref")
    with _build.emulation():
        _auto_takes_the_kernels(monkeypatch, "upfirdn2d", "bias_act", "modconv")
        # The layers' epilogue reaches the kernel: demodulation and noise as its scale and addend.
        from bigtrain.ops import _cuda
        real_bias_act, operands = _cuda.bias_act_cuda, []

        def spy(x, *args, **kw):  # the convolution layers' calls (4-D x), not the dense layers'
            if x.ndim == 4:
                operands.append((kw.get("scale", args[6] if len(args) > 6 else None),
                                 kw.get("addend", args[7] if len(args) > 7 else None)))
            return real_bias_act(x, *args, **kw)
        monkeypatch.setattr(_cuda, "bias_act_cuda", spy)
        calls = kernel_calls()
        ours = run("cuda")
        called = {op for op, n in kernel_calls().items() if n > calls.get(op, 0)}
    assert called == {"upfirdn2d", "bias_act"}, called  # modconv's kernel builds the fused path's weights (inference)
    # The 3 modulated layers at 4x4 and 8x8, in the one forward (the ToRGBs take no epilogue).
    assert [(s is not None, a is not None) for s, a in operands] == [(True, True), (False, False)] + [
        (True, True), (True, True), (False, False)], operands
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    # (A gradient that does not reach a parameter is None on one side and zeros on the other.)
    params = list(G.named_parameters())
    for which in (1, 2):
        for (name, p), a, b in zip(params, ours[which], ref[which]):
            a, b = (torch.zeros_like(p) if t is None else t for t in (a, b))
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{'path length ' if which == 2 else ''}{name}")


def test_a_biggan_generator_on_the_kernels_matches_the_reference(first_run, monkeypatch):
    # BigGAN's conditional batch norm + ReLU (and the output BN's) as one bias_act pass each, with a
    # scale and a per-sample bias folded from the batch statistics and the class/latent projections:
    # on the kernels' source, the image and G's gradients (through the statistics) equal the
    # reference's, in training (the batch's statistics) and in eval (the running ones).
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.models.biggan import BigGANGenerator
    from bigtrain.ops import _cuda
    torch.manual_seed(0)
    cfg = BigGANGenerator.Config(z_dim=12, shared_dim=4, ch=4, ch_mult=[4, 2, 2], attn_res=[8])
    G = BigGANGenerator(cfg, 16, 3, c_dim=3)
    z, c = torch.randn(4, 12), torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()

    def run(training):
        G.train(training)
        img = G(z, c)
        return img, torch.autograd.grad((img * torch.linspace(-1, 1, img.numel()).view_as(img)).sum(), G.parameters())

    state = {k: v.clone() for k, v in G.state_dict().items()}
    ref = [run(True), run(False)]
    G.load_state_dict(state)  # the running statistics as the reference's training forward found them
    with _build.emulation():
        _auto_takes_the_kernels(monkeypatch, "bias_act")
        real_bias_act, biases = _cuda.bias_act_cuda, []

        def spy(x, b, *args, **kw):
            biases.append(tuple(b.shape))
            return real_bias_act(x, b, *args, **kw)
        monkeypatch.setattr(_cuda, "bias_act_cuda", spy)
        ours = [run(True), run(False)]
    # Per forward: 2 conditional BNs in each of the 2 blocks ([N, C] biases), and the output BN (its
    # own affine parameters, expanded over the samples).
    assert biases == [(4, 16), (4, 8), (4, 8), (4, 8), (4, 8)] * 2, biases
    for (img, grads), (img_ref, grads_ref) in zip(ours, ref):
        torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-5)
        for (name, _), a, b in zip(G.named_parameters(), grads, grads_ref):
            # atol: a convolution's bias just before a batch norm has a true gradient of 0, which both
            # sides compute as rounding noise of order 1e-5.
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_folded_batch_norm_in_16_bits_keeps_channels_whose_mean_dwarfs_their_spread(first_run, monkeypatch, dtype):
    # Folded, BN's scale and shift are large and cancel where a channel's mean is large against its
    # spread: a constant channel of 300 has scale 1/sqrt(eps), about 316, and shift about -94868
    # (fp16's largest value is 65504). Both sides keep them in float32 and round u once, so the fold
    # adds no more than that rounding (the float32 statistics of these few exact values are exact).
    monkeypatch.setenv("BIGTRAIN_KERNEL_CACHE", str(first_run[0]))
    from bigtrain.models.biggan.layers import ConditionalBatchNorm
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(4, 3)
    x = torch.randn(4, 4, 5, 5) * 2
    x[:, 0] = 300.0  # constant: variance 0
    x[:, 1] += 40  # the mean 20 times the spread
    x, cond = x.to(dtype), torch.randn(4, 3)
    with torch.no_grad():
        y = F.batch_norm(x.double(), None, None, training=True, eps=cbn.bn.eps)
        want = F.relu(y * (1 + cbn.gain(cond)).double()[:, :, None, None] + cbn.bias(cond).double()[:, :, None, None])
        ref = cbn(x, cond, "relu")
        with _build.emulation():
            _auto_takes_the_kernels(monkeypatch, "bias_act")
            ours = cbn(x, cond, "relu")
    assert ref.dtype == ours.dtype == dtype
    assert want[:, 0].abs().max() > 0.1  # the constant channel's output is its conditional bias
    for got in (ref, ours):
        assert (got.double() - want).abs().max() < 0.02 * want.abs().max()
