"""Distribution-level metrics on feature sets: FID, KID, MMD (dot-product and Gaussian kernels).

Formulas (x: N real feature vectors, y: M synthetic ones, both (., F)):

* FID (the paper's eq. 3): ``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))`` with unbiased covariances.
  The point estimate uses ``scipy.linalg.sqrtm`` (``fid_method="sqrtm"``); a non-finite or inaccurate root
  (near-singular covariances) is recomputed with ``eps * I`` added to both covariances, an imaginary part
  above 1e-3 of the trace is an error and a smaller one is dropped. Bootstrap and fixed-n draws use the exact
  identity ``tr (S_x S_y)^(1/2) = ||A B^T||_*`` (nuclear norm; ``S_x = A^T A``, ``S_y = B^T B``), or for
  N*M > F^2 the symmetric form ``tr (S_x^(1/2) S_y S_x^(1/2))^(1/2)``: the same number, without sqrtm's
  slowdown on the rank-deficient covariances of N < F samples.
* KID: unbiased MMD^2 with the polynomial kernel ``(x.y / F + 1)^3``, mean and std over random subsets.
* MMD (the paper's eq. 4): unbiased MMD^2 with the dot-product kernel ``x.y``; its biased form equals
  ``|mu_x - mu_y|^2``. ``mmd_rbf``: unbiased MMD^2 with ``exp(-|x - y|^2 / (2 s^2))``, s the median pairwise
  distance among the real features (median heuristic on the reference set, so that every synthetic set
  compared with the same real set is measured with the same kernel; pooling would let the bandwidth, and the
  scale of the value, depend on the generator). s is fixed from the full real set for the bootstrap.

Confidence intervals are percentile bootstrap intervals over cases (real and synthetic cases resampled
independently, with replacement). Resampling repeats cases, which biases set statistics such as FID upward,
so an interval need not be centred on the point estimate; compare intervals only at equal set sizes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy import linalg

from benchmark.errors import BenchmarkError, ConfigError, DataError
from benchmark.metrics.context import MetricOutput, entry

if TYPE_CHECKING:
    from benchmark.metrics.context import EvalContext

Stat = Callable[[np.ndarray, np.ndarray], float]


def check_features(x: np.ndarray, y: np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Check two feature sets: 2D, the same dimension, at least 2 samples each, finite.

    Args:
        x: (N, F) real features.
        y: (M, F) synthetic features.
        what: named in the error message.

    Returns:
        Both as float64.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, a in (("real", x), ("synthetic", y)):
        if a.ndim != 2:
            raise DataError(f"{name} {what}", f"expected an (N, F) array, got shape {a.shape}")
        if a.shape[0] < 2:
            raise DataError(f"{name} {what}", f"need at least 2 samples, got {a.shape[0]}")
        if not np.isfinite(a).all():
            raise DataError(f"{name} {what}", "hold NaN/inf values")
    if x.shape[1] != y.shape[1]:
        raise DataError(what, f"real and synthetic feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def _trace_sqrt_product_svd(x: np.ndarray, y: np.ndarray) -> float:
    a = (x - x.mean(0)) / np.sqrt(x.shape[0] - 1)
    b = (y - y.mean(0)) / np.sqrt(y.shape[0] - 1)
    if len(a) * len(b) <= a.shape[1] ** 2:  # few samples: the (N, M) cross product is the small matrix
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    w, v = np.linalg.eigh(a.T @ a)  # many samples: tr (R S_y R)^(1/2) with R = S_x^(1/2), all symmetric
    r = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(r @ (b.T @ b) @ r), 0.0, None)).sum())


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    prod = s1 @ s2
    with warnings.catch_warnings():  # scipy warns on singular input; the residual check below decides
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(prod)
    scale = max(np.linalg.norm(prod), 1e-300)
    if not np.isfinite(root).all() or np.linalg.norm(root @ root - prod) > 1e-3 * scale:
        offset = eps * np.eye(s1.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            root = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if not np.isfinite(root).all():
        raise BenchmarkError("FID: the covariance product has no finite square root, even with eps * I added")
    tr = np.trace(root)
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > 1e-3 * max(1.0, abs(tr.real)):
            raise BenchmarkError(f"FID: square root has a large imaginary component ({imag:.3g}); features degenerate?")
        tr = tr.real
    return float(tr)


def rank_deficiency_note(n: int, dim: int) -> str:
    """The caveat of an FID from fewer samples than feature dimensions ("" when there are enough samples).

    Args:
        n: samples in the smaller of the two sets.
        dim: feature dimensions.

    Returns:
        A sentence for the FID's summary entry (the report says it once per study), or "".
    """
    if n >= dim:
        return ""
    return (
        f"FID from {n} samples of {dim}-dimensional features: the covariances are rank-deficient and the value "
        "depends on the sample size; compare values at equal n (fid_at_n)"
    )


def frechet_distance(x: np.ndarray, y: np.ndarray, *, method: str = "sqrtm", eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on backbone features).

    With fewer samples than feature dimensions the covariances are rank-deficient and the value depends on the
    sample size (see :func:`rank_deficiency_note`, recorded on the FID's summary entry).

    Args:
        x: (N, F) real features.
        y: (M, F) synthetic features.
        method: ``"sqrtm"`` (scipy matrix square root) or ``"svd"`` (exact nuclear-norm identity).
        eps: diagonal offset for near-singular covariances (sqrtm only).

    Returns:
        The distance (>= 0 up to rounding).
    """
    x, y = check_features(x, y)
    diff = x.mean(0) - y.mean(0)
    if method == "svd":
        tr_cross = _trace_sqrt_product_svd(x, y)
    elif method == "sqrtm":
        tr_cross = _trace_sqrt_product_sqrtm(np.cov(x, rowvar=False), np.cov(y, rowvar=False), eps)
    else:
        raise ConfigError(f"metrics.fid_method: {method!r} is not one of 'sqrtm', 'svd'")
    tr_x = float(((x - x.mean(0)) ** 2).sum() / (len(x) - 1))
    tr_y = float(((y - y.mean(0)) ** 2).sum() / (len(y) - 1))
    return float(diff @ diff + tr_x + tr_y - 2.0 * tr_cross)


def mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, *, unbiased: bool = True) -> float:
    """MMD^2 from kernel matrices; unbiased drops the diagonals of kxx and kyy (the paper's eq. 4)."""
    m, n = kxx.shape[0], kyy.shape[0]
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean())
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd_linear(x: np.ndarray, y: np.ndarray, *, unbiased: bool = True) -> float:
    """MMD^2 with the dot-product kernel; the biased estimator equals ``|mean(x) - mean(y)|^2``."""
    x, y = check_features(x, y)
    return mmd2_from_kernels(x @ x.T, y @ y.T, x @ y.T, unbiased=unbiased)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray, y: np.ndarray | None = None) -> float:
    """Median heuristic: the median pairwise Euclidean distance (i < j) among x, or among x and y pooled."""
    z = x if y is None else np.concatenate([x, y])
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), k=1)])
    sigma = float(np.median(d))
    if sigma <= 0.0:
        raise DataError("features", "median pairwise distance is 0 (more than half the samples coincide)")
    return sigma


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, sigma: float | None = None, unbiased: bool = True) -> float:
    """MMD^2 with the Gaussian kernel ``exp(-|a - b|^2 / (2 sigma^2))``; sigma None = median heuristic (pooled)."""
    x, y = check_features(x, y)
    s = median_bandwidth(x, y) if sigma is None else sigma
    k = [np.exp(-_sq_dists(a, b) / (2.0 * s * s)) for a, b in ((x, x), (y, y), (x, y))]
    return mmd2_from_kernels(*k, unbiased=unbiased)


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return mmd2_from_kernels(kxx, kyy, kxy, unbiased=True)


def kid(
    x: np.ndarray, y: np.ndarray, *, subsets: int, subset_size: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over random subsets.

    Args:
        x: (N, F) real features.
        y: (M, F) synthetic features.
        subsets: number of subsets.
        subset_size: cases drawn (without replacement) from each set per subset.
        rng: the random generator (seeded by the caller).

    Returns:
        Mean and standard deviation over subsets.
    """
    x, y = check_features(x, y)
    if subset_size > min(len(x), len(y)):
        raise ConfigError(
            f"metrics.kid_subset_size: {subset_size} exceeds the number of cases (real {len(x)}, "
            f"synthetic {len(y)}); lower it"
        )
    vals = [
        _poly_mmd2(x[rng.choice(len(x), subset_size, replace=False)], y[rng.choice(len(y), subset_size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def bootstrap_ci(
    stat: Stat, x: np.ndarray, y: np.ndarray, *, n_boot: int, rng: np.random.Generator, alpha: float = 0.05
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``stat(x, y)`` over cases (both sets resampled with replacement).

    Args:
        stat: the statistic of two (., F) arrays.
        x: real features.
        y: synthetic features.
        n_boot: resamples; 0 returns (None, None).
        rng: the random generator.
        alpha: 1 - coverage.

    Returns:
        (low, high).
    """
    if n_boot == 0:
        return None, None
    vals = [stat(x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))]) for _ in range(n_boot)]
    low, high = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def at_fixed_n(stat: Stat, x: np.ndarray, y: np.ndarray, *, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``stat`` on ``draws`` random subsamples of ``n`` cases from each set (without replacement)."""
    if n > min(len(x), len(y)):
        raise ConfigError(
            f"metrics.fixed_n: {n} exceeds the number of cases (real {len(x)}, synthetic {len(y)}); "
            "lower it or set 0 to disable"
        )
    return np.array(
        [stat(x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)]) for _ in range(draws)]
    )


def _features(ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
    return check_features(ctx.real_features[1], ctx.synthetic_features[1])


def _fixed_n_entry(ctx: EvalContext, stat: Stat, x: np.ndarray, y: np.ndarray, name: str) -> dict:
    vals = at_fixed_n(stat, x, y, n=ctx.cfg.fixed_n, draws=ctx.cfg.fixed_n_draws, rng=ctx.rng(name))
    ci = tuple(float(q) for q in np.quantile(vals, [0.025, 0.975]))
    return entry(vals.mean(), ci, n=ctx.cfg.fixed_n, backbone=ctx.backbone, interval="subsample_draws")


def fid_metric(ctx: EvalContext) -> MetricOutput:
    """FID with a bootstrap CI (and a ``note`` when the covariances are rank-deficient), plus ``fid_at_n``."""
    x, y = _features(ctx)
    value = frechet_distance(x, y, method=ctx.cfg.fid_method)

    def stat(a: np.ndarray, b: np.ndarray) -> float:
        return frechet_distance(a, b, method="svd")

    ci = bootstrap_ci(stat, x, y, n_boot=ctx.cfg.bootstrap, rng=ctx.rng("fid"))
    n = min(len(x), len(y))
    note = rank_deficiency_note(n, x.shape[1])
    fid = entry(value, ci, n=n, backbone=ctx.backbone, **({"note": note} if note else {}))
    out = MetricOutput(summary={"fid": fid})
    if ctx.cfg.fixed_n:
        out.summary["fid_at_n"] = _fixed_n_entry(ctx, stat, x, y, "fid_at_n")
    return out


def kid_metric(ctx: EvalContext) -> MetricOutput:
    """KID (mean, std over subsets) with a bootstrap CI, plus ``kid_at_n``."""
    x, y = _features(ctx)
    cfg = ctx.cfg

    subset_rng = ctx.rng("kid_subsets")  # subsets inside bootstrap resamples and fixed-n draws

    def stat(a: np.ndarray, b: np.ndarray) -> float:
        return kid(a, b, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, rng=subset_rng)[0]

    mean, std = kid(x, y, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, rng=ctx.rng("kid"))
    ci = bootstrap_ci(stat, x, y, n_boot=cfg.bootstrap, rng=ctx.rng("kid_resample"))
    out = MetricOutput(summary={"kid": entry(mean, ci, n=min(len(x), len(y)), backbone=ctx.backbone, std=std)})
    if cfg.fixed_n:
        if cfg.kid_subset_size > cfg.fixed_n:
            raise ConfigError(f"metrics.kid_subset_size: {cfg.kid_subset_size} exceeds metrics.fixed_n={cfg.fixed_n}")
        out.summary["kid_at_n"] = _fixed_n_entry(ctx, stat, x, y, "kid_at_n")
    return out


def mmd_metric(ctx: EvalContext) -> MetricOutput:
    """Unbiased dot-product-kernel MMD^2 (the paper's eq. 4) with a bootstrap CI."""
    x, y = _features(ctx)
    value = mmd_linear(x, y)
    ci = bootstrap_ci(mmd_linear, x, y, n_boot=ctx.cfg.bootstrap, rng=ctx.rng("mmd"))
    return MetricOutput(summary={"mmd": entry(value, ci, n=min(len(x), len(y)), backbone=ctx.backbone)})


def mmd_rbf_metric(ctx: EvalContext) -> MetricOutput:
    """Unbiased Gaussian-kernel MMD^2 (median-heuristic bandwidth) with a bootstrap CI."""
    x, y = _features(ctx)
    sigma = median_bandwidth(x)  # from the real set only: the same kernel for every generator compared to it

    def stat(a: np.ndarray, b: np.ndarray) -> float:
        return mmd_rbf(a, b, sigma=sigma)

    ci = bootstrap_ci(stat, x, y, n_boot=ctx.cfg.bootstrap, rng=ctx.rng("mmd_rbf"))
    value = mmd_rbf(x, y, sigma=sigma)
    return MetricOutput(
        summary={"mmd_rbf": entry(value, ci, n=min(len(x), len(y)), backbone=ctx.backbone, bandwidth=sigma)}
    )
