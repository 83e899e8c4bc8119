"""FID, KID and MMD against closed forms, brute-force sums and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from benchmark.config import MetricsConfig
from benchmark.errors import ConfigError, DataError
from benchmark.metrics.distribution import (
    at_fixed_n,
    bootstrap_ci,
    frechet_distance,
    kid,
    median_bandwidth,
    mmd2_from_kernels,
    mmd_linear,
    mmd_rbf,
    rank_deficiency_note,
)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _closed_form_fid(mu1, s1, mu2, s2) -> float:
    # symmetric form tr((S1^1/2 S2 S1^1/2)^1/2), computed with eigh only (independent of scipy.sqrtm)
    r1 = _psd_sqrt(s1)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * _psd_sqrt(r1 @ s2 @ r1)))


@pytest.mark.parametrize("method", ["sqrtm", "svd"])
def test_fid_matches_closed_form_of_gaussians(method):
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25, 2.0])
    s1 = np.diag([1.0, 2.0, 0.5, 1.5])
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s2 = q @ np.diag([3.0, 0.2, 1.0, 4.0]) @ q.T
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    expected = _closed_form_fid(mu1, s1, mu2, s2)
    assert expected > 5.0  # a value large enough for a 1% check to mean something
    assert frechet_distance(x, y, method=method) == pytest.approx(expected, rel=0.01)


def test_fid_of_identical_sets_is_zero_and_methods_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16))
    assert abs(frechet_distance(x, x)) < 1e-6
    y = rng.standard_normal((300, 16)) * 1.3 + 0.2
    assert frechet_distance(x, y, method="sqrtm") == pytest.approx(frechet_distance(x, y, method="svd"), rel=1e-6)


def test_fid_rank_deficient_is_noted_not_warned_and_methods_agree():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 64)), rng.standard_normal((15, 64)) + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per study in the report, not on every job's terminal
        a = frechet_distance(x, y, method="sqrtm")
    b = frechet_distance(x, y, method="svd")
    assert a == pytest.approx(b, rel=1e-4)
    assert rank_deficiency_note(12, 64).startswith("FID from 12 samples of 64-dimensional features: the covariances")
    assert rank_deficiency_note(64, 64) == ""


def test_kid_is_unbiased_for_one_distribution():
    rng = np.random.default_rng(3)
    vals = []
    for _ in range(300):
        x, y = rng.standard_normal((20, 8)), rng.standard_normal((20, 8))
        vals.append(kid(x, y, subsets=1, subset_size=20, rng=rng)[0])
    vals = np.array(vals)
    assert abs(vals.mean()) < 3 * vals.std() / np.sqrt(len(vals))
    # the biased estimator on the same kind of draws is clearly positive: the test can fail
    x, y = rng.standard_normal((20, 8)), rng.standard_normal((20, 8))
    k = [(a @ b.T / 8 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))]
    assert mmd2_from_kernels(*k, unbiased=False) > 5 * vals.std() / np.sqrt(len(vals))


def test_kid_detects_a_shift_and_reports_std():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 8)), rng.standard_normal((40, 8)) + 1.0
    mean, std = kid(x, y, subsets=20, subset_size=10, rng=rng)
    assert mean > 5 * std / np.sqrt(20) and std > 0


def test_mmd_linear_biased_is_squared_mean_distance():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, -1.0]])
    y = np.array([[1.0, 1.0], [-1.0, 0.0]])
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2)
    assert mmd_linear(x, y, unbiased=False) == pytest.approx(expected, rel=1e-12)


def test_mmd_unbiased_matches_brute_force_sums():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.5
    m, n = len(x), len(y)
    sxx = sum(x[i] @ x[j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(y[i] @ y[j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(x[i] @ y[j] for i in range(m) for j in range(n)) / (m * n)
    assert mmd_linear(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)

    z = np.concatenate([x, y])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    s = np.median(dists)
    assert median_bandwidth(x, y) == pytest.approx(s)

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * s * s))

    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd_rbf(x, y) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)


@pytest.mark.parametrize(
    "fn", [frechet_distance, mmd_linear, mmd_rbf, lambda a, b: kid(a, b, subsets=2, subset_size=2, rng=None)]
)
def test_bad_feature_sets_are_clear_errors(fn):
    rng = np.random.default_rng(6)
    good = rng.standard_normal((5, 4))
    with pytest.raises(DataError, match="dimensions differ: 4 vs 3"):
        fn(good, rng.standard_normal((5, 3)))
    with pytest.raises(DataError, match="at least 2 samples, got 1"):
        fn(good, rng.standard_normal((1, 4)))
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="real features: hold NaN"):
        fn(bad, good)


def test_bootstrap_and_fixed_n_are_seeded_and_checked():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 4)) + 0.5
    a = bootstrap_ci(mmd_linear, x, y, n_boot=50, rng=np.random.default_rng(0))
    b = bootstrap_ci(mmd_linear, x, y, n_boot=50, rng=np.random.default_rng(0))
    assert a == b and a[0] < mmd_linear(x, y) < a[1]
    assert bootstrap_ci(mmd_linear, x, y, n_boot=0, rng=rng) == (None, None)
    vals = at_fixed_n(mmd_linear, x, y, n=10, draws=5, rng=np.random.default_rng(0))
    assert vals.shape == (5,) and np.all(np.isfinite(vals))
    with pytest.raises(ConfigError, match="metrics.fixed_n: 30 exceeds the number of cases"):
        at_fixed_n(mmd_linear, x, y, n=30, draws=5, rng=rng)
    with pytest.raises(ConfigError, match="metrics.kid_subset_size: 25 exceeds"):
        kid(x, y, subsets=2, subset_size=25, rng=rng)


def test_metrics_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="fixed_n"):
        MetricsConfig(fixed_n=1)
    with pytest.raises(ConfigError, match="msssim_kernel"):
        MetricsConfig(msssim_kernel=(4, 5, 3))
