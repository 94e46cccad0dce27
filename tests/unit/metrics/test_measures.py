"""Metric math against independent computations: FID's matrix square root by scipy's sqrtm of
S1 S2, KID as literal loops, precision/recall by brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bigtrain.metrics import measures, parse_metrics
from bigtrain.metrics.evaluate import MetricSpec


def _spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _trace_sqrt_sqrtm(s1, s2):
    from scipy import linalg
    return np.trace(linalg.sqrtm(s1 @ s2).real)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(d, rng), _spd(d, rng)
    # The textbook route: the principal square root of the non-symmetric S1 S2 (scipy's sqrtm).
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_sqrtm(s1, s2)
    assert measures.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Equal Gaussians: 0; shifting the mean by v adds |v|^2.
    assert measures.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)
    assert measures.frechet_distance(mu1, s1, mu1 + 2, s1) == pytest.approx(4 * d, rel=1e-9)


def test_fid_of_a_feature_set_against_itself_is_zero():
    feats = torch.randn(300, 32, dtype=torch.float64)
    stats = measures.mean_cov(feats)
    assert abs(measures.frechet_distance(*stats, *stats)) < 1e-8
    other = measures.mean_cov(torch.randn(300, 32, dtype=torch.float64) + 0.5)
    assert measures.frechet_distance(*stats, *other) > 32 * 0.2


@pytest.mark.parametrize("n_real, n_fake", [(300, 300), (20, 20), (7, 12)])
def test_fid_of_features_takes_the_small_route_below_the_dimension_and_agrees(n_real, n_fake):
    """fid(real, fake): the covariance route at n >= d, an n x n singular-value route below it
    (fid24 of 2048-d features); both against scipy's sqrtm of the (singular) product."""
    g = torch.Generator().manual_seed(n_real)
    d = 32
    real = torch.randn(n_real, d, generator=g, dtype=torch.float64)
    fake = torch.randn(n_fake, d, generator=g, dtype=torch.float64) * 1.5 + 0.3
    (m1, s1), (m2, s2) = measures.mean_cov(real), measures.mean_cov(fake)
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_sqrtm(s1, s2)
    # sqrtm (and the eigensolve route of frechet_distance) take square roots of the round-off in
    # the zero eigenvalues of a singular product, about 1e-8 each: a looser match below d.
    tol = 1e-9 if min(n_real, n_fake) >= d else 1e-6
    assert measures.fid(real, fake) == pytest.approx(expected, rel=tol)
    assert measures.fid(real, fake) == pytest.approx(measures.frechet_distance(m1, s1, m2, s2), rel=tol)
    # Exact cases: fake = 2 real gives S2 = 4 S1, so FID = |mu1|^2 + Tr S1.
    assert measures.fid(real, 2 * real) == pytest.approx(float((m1 ** 2).sum() + np.trace(s1)), rel=1e-12)
    assert measures.fid(real, real) == pytest.approx(0, abs=1e-8)


def test_kid_equals_the_unbiased_mmd_written_as_loops():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64) + 0.3
    n, d = 9, 4
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    # One subset of all n samples: the permutation does not change the sums.
    assert measures.kid(x, y, subsets=1, subset_size=n) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # Two draws of one distribution: near 0; a shifted one: far from it.
    a, b = (torch.randn(400, 16, generator=g, dtype=torch.float64) for _ in range(2))
    same, shifted = measures.kid(a, b, subsets=10, subset_size=200), measures.kid(a, b + 0.5, subsets=10, subset_size=200)
    assert abs(same) < 0.05 and shifted > 0.5


def _pr_brute(real, fake, k):
    def radii(s):
        return [sorted(float((a - b).norm()) for b in s)[k] for a in s]  # index k: the k-th other point
    rr, rf = radii(real), radii(fake)
    precision = np.mean([any(float((f - r).norm()) <= rad for r, rad in zip(real, rr)) for f in fake])
    recall = np.mean([any(float((r - f).norm()) <= rad for f, rad in zip(fake, rf)) for r in real])
    return precision, recall


def test_precision_recall_match_brute_force_and_the_obvious_cases():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(40, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(30, 3, generator=g, dtype=torch.float64) * 1.5 + 0.5
    assert measures.precision_recall(real, fake, k=3, batch=7) == pytest.approx(_pr_brute(real, fake, 3))
    assert measures.precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    assert measures.precision_recall(real, real + 100, k=3) == (0.0, 0.0)
    half = torch.cat([real[:20], real[:20] + 100])  # half the fakes on the data, half far off
    p, _ = measures.precision_recall(real, half, k=3)
    assert p == 0.5


def test_parse_metrics():
    assert parse_metrics("fid10k, kid1k,pr500") == [MetricSpec("fid", 10000), MetricSpec("kid", 1000),
                                                    MetricSpec("pr", 500)]
    assert [s.name for s in parse_metrics(["fid50k", "pr64"])] == ["fid50k", "pr64"]
    with pytest.raises(ValueError, match="unknown metric 'fdi10k'"):
        parse_metrics("fdi10k")
    with pytest.raises(ValueError, match="Inception Score needs the classifier's logits"):
        parse_metrics("is10k")
