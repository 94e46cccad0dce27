"""Phase schedule, lazy-regularization ratios, G_ema decay, batch rounds and seed helpers."""

import copy

import pytest
import torch
from torch import nn

from bigtrain.models.sampling import latents_from_seeds, one_hot, parse_seeds
from bigtrain.train.config import LoopConfig
from bigtrain.train.ema import ema_beta, update_ema
from bigtrain.train.phases import Phase, build_phases, lazy_ratio


def summary(phases):
    return [(p.name, p.net, p.terms, p.interval, p.repeat) for p in phases]


# ---------------------------------------------------------------- phases

def test_stylegan2_default_phases():
    phases = build_phases({"G": 4, "D": 16})
    assert summary(phases) == [
        ("Gmain", "G", "main", 1, 1),
        ("Greg", "G", "reg", 4, 1),
        ("Dmain", "D", "main", 1, 1),
        ("Dreg", "D", "reg", 16, 1),
    ]


def test_unregularized_g_and_every_step_d_regularizer():
    assert summary(build_phases({"G": None, "D": 1})) == [
        ("Gmain", "G", "main", 1, 1),
        ("Dboth", "D", "both", 1, 1),
    ]
    assert summary(build_phases({"G": None, "D": None})) == [
        ("Gmain", "G", "main", 1, 1),
        ("Dmain", "D", "main", 1, 1),
    ]


def test_d_repeat_applies_to_d_phases_only():
    phases = build_phases({"G": 4, "D": 1}, d_repeat=2)
    by_name = {p.name: p for p in phases}
    assert set(by_name) == {"Gmain", "Greg", "Dboth"}
    assert by_name["Dboth"].repeat == 2
    assert by_name["Gmain"].repeat == 1 and by_name["Greg"].repeat == 1
    phases = build_phases({"G": None, "D": None}, d_repeat=3)
    assert [p.repeat for p in phases if p.net == "D"] == [3]


def test_lazy_ratio():
    phases = build_phases({"G": 4, "D": 16})
    assert lazy_ratio(phases, "D") == pytest.approx(16 / 17)
    assert lazy_ratio(phases, "G") == pytest.approx(4 / 5)
    assert Phase("Dreg", "D", "reg", interval=16).lr_ratio() == pytest.approx(16 / 17)
    # non-lazy: the optimizer keeps its lr
    assert lazy_ratio(build_phases({"G": None, "D": 1}), "D") == 1.0
    assert lazy_ratio(build_phases({"G": None, "D": 1}), "G") == 1.0


# ---------------------------------------------------------------- EMA

@pytest.mark.parametrize("batch, halflife_kimg", [(32, 8.0), (64, 0.512), (4, 0.1), (50, 10.0)])
def test_ema_beta_halves_after_one_halflife(batch, halflife_kimg):
    steps = round(halflife_kimg * 1000 / batch)
    assert steps * batch == pytest.approx(halflife_kimg * 1000)
    prod = 1.0
    for i in range(steps):
        prod *= ema_beta(batch, nimg=10**9 + i * batch, halflife_kimg=halflife_kimg, rampup=None)
    assert prod == pytest.approx(0.5, rel=1e-9)


def test_ema_rampup_makes_early_beta_smaller():
    late = ema_beta(32, nimg=10**8, halflife_kimg=10, rampup=0.05)
    early = ema_beta(32, nimg=10_000, halflife_kimg=10, rampup=0.05)
    assert early < late
    assert late == pytest.approx(ema_beta(32, nimg=10**8, halflife_kimg=10, rampup=None))
    # early, the half-life is nimg * rampup = 500 images
    assert early == pytest.approx(0.5 ** (32 / 500))
    # at the very start G_ema simply copies G
    assert ema_beta(32, nimg=0, halflife_kimg=10, rampup=0.05) == pytest.approx(0.0, abs=1e-12)
    assert 0 <= early < 1


class Net(nn.Module):
    def __init__(self, fill):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        with torch.no_grad():
            for p in self.parameters():
                p.fill_(fill)
            self.bn.running_mean.fill_(fill)


@pytest.mark.parametrize("foreach", [False, True])
def test_update_ema_moves_params_and_copies_buffers(foreach):
    ema, net = Net(0.0), Net(1.0)
    net.bn.num_batches_tracked.fill_(7)  # an int64 buffer among the float ones
    update_ema(ema, net, beta=0.75, foreach=foreach)
    for p in ema.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.25))  # moved toward net by 1 - beta
    assert torch.equal(ema.bn.running_mean, net.bn.running_mean)
    assert ema.bn.num_batches_tracked.item() == 7
    update_ema(ema, net, beta=0.75, foreach=foreach)
    for p in ema.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.25 + 0.75 * 0.25))
    # net is untouched and no graph is recorded
    assert all(torch.all(p == 1.0) for p in net.parameters())
    assert all(not p.requires_grad or p.grad is None for p in ema.parameters())
    update_ema(ema, net, beta=0.0, foreach=foreach)
    for pe, pn in zip(ema.parameters(), net.parameters()):
        assert torch.equal(pe, pn)


def test_update_ema_with_multi_tensor_ops_gives_the_loops_bits():
    # The GPU's way (torch._foreach_*, a few launches for the network) against the loop, on a
    # StyleGAN2 G with random weights and buffers, over the betas a run sees.
    from bigtrain.config import build
    from bigtrain.models import get_family
    spec = get_family("stylegan2")
    torch.manual_seed(0)
    cfg = build(spec.generator.Config, {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64,
                                        "channel_max": 8})
    net, start = (spec.build_generator(cfg, 16, 3, 0) for _ in range(2))
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            t.copy_(torch.randn_like(t))
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    for beta in (0.0, 0.3, 0.999):
        update_ema(a, net, beta, foreach=False)
        update_ema(b, net, beta, foreach=True)
        for x, y in zip([*a.parameters(), *a.buffers()], [*b.parameters(), *b.buffers()]):
            assert torch.equal(x, y)
    assert not torch.equal(next(a.parameters()), next(start.parameters()))

    # `bench gpu` times the two on paper256's G (its bench-kernels section, GPU only); here on the CPU.
    from bigtrain.bench.kernels import bench_ema, format_ema
    r = bench_ema(net, iters=2)
    assert r["tensors"] == len([*net.parameters(), *net.buffers()]) and r["loop_ms"] > 0 and r["foreach_ms"] > 0
    assert format_ema(r).startswith(f"G_ema update ({r['tensors']} tensors, {r['params']:,} parameters): loop ")


# ---------------------------------------------------------------- batch rounds

def test_rounds_splits_global_batch():
    assert LoopConfig(batch_size=32, batch_gpu=8).rounds(1) == (8, 4)
    assert LoopConfig(batch_size=32).rounds(1) == (32, 1)
    assert LoopConfig(batch_size=32).rounds(4) == (8, 1)
    assert LoopConfig(batch_size=64, batch_gpu=4).rounds(2) == (4, 8)


def test_rounds_batch_gpu_not_dividing_names_all_numbers():
    with pytest.raises(ValueError) as ei:
        LoopConfig(batch_size=32, batch_gpu=5).rounds(2)
    msg = str(ei.value)
    for s in ("32", "2", "5", "batch_gpu", "batch_size"):
        assert s in msg


def test_rounds_world_not_dividing_names_numbers_and_source():
    with pytest.raises(ValueError) as ei:
        LoopConfig(batch_size=30, batch_gpu=5).rounds(4, source="run.yaml")
    msg = str(ei.value)
    assert "30" in msg and "4" in msg and "run.yaml" in msg


def test_batch_gpu_larger_than_per_rank_batch_is_rejected():
    with pytest.raises(ValueError, match="16"):
        LoopConfig(batch_size=16, batch_gpu=32).rounds(1)


# ---------------------------------------------------------------- seeds

def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]
    assert parse_seeds(" 1, 9-11 ,") == [1, 9, 10, 11]
    with pytest.raises(ValueError):
        parse_seeds("5-2")
    with pytest.raises(ValueError):
        parse_seeds("")
    with pytest.raises(ValueError):
        parse_seeds("a-b")


def test_latents_from_seeds_are_reproducible_per_seed():
    a = latents_from_seeds([3, 4, 3], 8)
    b = latents_from_seeds([4, 3], 8)
    assert a.shape == (3, 8) and a.dtype == torch.float32
    assert torch.equal(a[0], a[2])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])
    # unaffected by torch's global RNG
    torch.manual_seed(123)
    c = latents_from_seeds([3], 8)
    torch.manual_seed(456)
    assert torch.equal(c, latents_from_seeds([3], 8))
    assert torch.equal(c[0], a[0])
    # roughly standard normal
    big = latents_from_seeds(list(range(50)), 64)
    assert abs(big.mean().item()) < 0.1 and abs(big.std().item() - 1) < 0.1


def test_one_hot():
    oh = one_hot(torch.tensor([2, 0]), 3, 2, "cpu")
    assert oh.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot(None, 0, 4, "cpu").shape == (4, 0)
