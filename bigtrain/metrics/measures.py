"""Metric math on feature matrices [n, d] (float64)."""
from __future__ import annotations

import numpy as np
import torch


def mean_cov(feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = feats.double().cpu().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2). The eigenvalues of S1 S2 are those of the
    symmetric S1^1/2 S2 S1^1/2, so the trace of the square root is the sum of the square roots of
    that matrix's eigenvalues: two symmetric eigensolves, exact for singular covariances too (about
    3 s at d = 2048 on one core; scipy.linalg.sqrtm of S1 S2 took 13-18 s and needed a nudge of the
    diagonals when the product was singular)."""
    diff = mu1 - mu2
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID of two feature sets [n, d]. With fewer images than feature dimensions (fid24 and the
    like, as in tests and quick checks) the same number comes from an n x n problem: with X the
    centred features, S = X^T X / (n - 1), and the eigenvalues of S1 S2 that are not 0 are the
    squared singular values of X1 X2^T / sqrt((n1 - 1)(n2 - 1)), so Tr (S1 S2)^1/2 is that matrix's
    nuclear norm."""
    r, f = real.double().cpu().numpy(), fake.double().cpu().numpy()
    n1, n2, d = len(r), len(f), r.shape[1]
    if max(n1, n2) >= d:
        return frechet_distance(*mean_cov(real), *mean_cov(fake))
    mu1, mu2 = r.mean(axis=0), f.mean(axis=0)
    x1, x2 = r - mu1, f - mu2
    trace_sqrt = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + (x1 * x1).sum() / (n1 - 1) + (x2 * x2).sum() / (n2 - 1) - 2 * trace_sqrt)


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets (Binkowski et al. 2018)."""
    n = min(len(real), len(fake), subset_size)
    d = real.shape[1]
    g = torch.Generator().manual_seed(seed)
    real, fake = real.double().cpu(), fake.double().cpu()
    total = 0.0
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=g)[:n]]
        y = fake[torch.randperm(len(fake), generator=g)[:n]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        total += float((kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
                       - 2 * kxy.mean())
    return total / subsets


def _kth_neighbour_radii(feats: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    radii = []
    for i in range(0, len(feats), batch):
        dist = torch.cdist(feats[i:i + batch], feats)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # +1: each point is its own nearest neighbour
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int) -> float:
    """Fraction of probes inside at least one hypersphere (centre in manifold, radius radii)."""
    inside = 0
    for i in range(0, len(probes), batch):
        dist = torch.cdist(probes[i:i + batch], manifold)
        inside += int((dist <= radii[None]).any(dim=1).sum())
    return inside / len(probes)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, batch: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the share of fakes
    inside the real manifold (each real's k-NN ball among reals), recall the share of reals inside
    the fake manifold."""
    real, fake = real.double().cpu(), fake.double().cpu()
    precision = _coverage(real, _kth_neighbour_radii(real, k, batch), fake, batch)
    recall = _coverage(fake, _kth_neighbour_radii(fake, k, batch), real, batch)
    return precision, recall


# MS-SSIM's per-scale weights (Wang et al. 2003), finest scale first.
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MSSSIM_KERNEL = 11


def msssim_scales(resolution: int) -> int:
    """How many of MS-SSIM's five scales fit an image: each halves it, and the coarsest must
    still be wider than the 11-tap Gaussian window (all five from 161 px up; two at 32 px)."""
    scales = 5
    while scales > 1 and resolution <= (MSSSIM_KERNEL - 1) * 2 ** (scales - 1):
        scales -= 1
    if resolution <= MSSSIM_KERNEL - 1:
        raise ValueError(f"MS-SSIM needs images larger than {MSSSIM_KERNEL - 1} px; these are {resolution} px")
    return scales


def msssim_pairs(a: torch.Tensor, b: torch.Tensor, batch: int = 256) -> float:
    """Mean MS-SSIM between images a[i] and b[i] (float, [-1, 1], [n, C, H, W]): the diversity
    measure of Odena et al. 2017, lower = more varied. torchmetrics does the math; images smaller
    than 161 px use the first scales that fit (msssim_scales), their weights renormalised."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    scales = msssim_scales(a.shape[-1])
    betas = MSSSIM_BETAS[:scales]
    betas = tuple(v / sum(betas) for v in betas)
    values = []
    for i in range(0, len(a), batch):
        x, y = ((t[i:i + batch].double().cpu() + 1) / 2 for t in (a, b))
        values.append(multiscale_structural_similarity_index_measure(
            x, y, data_range=1.0, kernel_size=MSSSIM_KERNEL, betas=betas, reduction="none"))
    return float(torch.cat(values).mean())
