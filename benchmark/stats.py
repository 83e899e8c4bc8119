"""Paired tests, the corrected resampled t-test, bootstrap confidence intervals, effect sizes and Holm's correction.

Pure functions on numpy arrays. None of them raises on too little data: they return a result whose ``reason``
says why no number could be computed, so a report can show the gap instead of dropping the comparison.

Conventions: ``x`` is the arm under test, ``y`` the baseline, paired element by element; the difference is
``d = x - y`` and the one-sided alternative is "``x`` is greater" (for lower-is-better metrics such as HD95 the
caller orients the difference first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "BootstrapResult", "CorrectedTTestResult", "WilcoxonResult", "bootstrap_ci", "cohens_dz",
    "corrected_resampled_ttest", "holm", "lucky_split_count", "min_detectable_effect", "min_pairs_reason",
    "paired_bootstrap_ci", "paired_differences", "rank_biserial", "wilcoxon_greater",
]  # fmt: skip

WILCOXON_ZERO_METHOD = "wilcox"  # zero differences carry no sign information: drop them (Wilcoxon 1945)
WILCOXON_EXACT_MAX_N = 50  # scipy's own cut-off for the exact null distribution


@dataclass(frozen=True)
class WilcoxonResult:
    """Outcome of :func:`wilcoxon_greater`; ``reason`` is set (and the numbers NaN) when the test could not run."""

    statistic: float
    p: float
    n_pairs: int
    n_nonzero: int
    method: str
    zero_method: str = WILCOXON_ZERO_METHOD
    reason: str | None = None


@dataclass(frozen=True)
class CorrectedTTestResult:
    """Outcome of :func:`corrected_resampled_ttest`."""

    t: float
    df: int
    p: float
    mean: float
    n_splits: int
    test_train_ratio: float
    alternative: str
    reason: str | None = None
    se: float = float("nan")  # sqrt((1/J + n_test/n_train) * var(d)): the corrected standard error of mean(d)


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap interval of a statistic."""

    estimate: float
    low: float
    high: float
    n: int
    n_boot: int
    confidence: float
    reason: str | None = None


def min_pairs_reason(n_pairs: int, min_pairs: int, what: str = "paired cases") -> str | None:
    """Return why ``n_pairs`` is too few for a test, or None when there are enough.

    Args:
        n_pairs: number of usable pairs (or splits).
        min_pairs: the configured minimum.
        what: the noun used in the message.

    Returns:
        ``"<n> <what> < minimum <min_pairs>"`` or None.
    """
    if n_pairs < min_pairs:
        return f"{n_pairs} {what} < minimum {min_pairs}"
    return None


def paired_differences(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Element-wise ``x - y`` over the pairs where both values are finite.

    Args:
        x: values of the arm under test.
        y: baseline values, same length and order as ``x``.

    Returns:
        1-D float64 array of the finite differences.

    Raises:
        ValueError: if ``x`` and ``y`` differ in length (a programming error, not a data gap).
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"paired samples differ in length: {xa.size} vs {ya.size}")
    d = xa - ya
    return d[np.isfinite(d)]


def wilcoxon_greater(x: Sequence[float], y: Sequence[float], *, min_pairs: int = 5) -> WilcoxonResult:
    """Paired one-sided Wilcoxon signed-rank test of "``x`` is greater than ``y``".

    With ``d_i = x_i - y_i`` and the zero differences dropped (``zero_method="wilcox"``), the statistic is
    ``W+ = sum_{d_i > 0} rank(|d_i|)`` (Wilcoxon 1945). The p-value is ``P(W+ >= w | H0)``, from scipy's
    ``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="greater", method=...)`` where ``method`` is
    ``"exact"`` for at most 50 non-zero differences without ties in ``|d|`` and ``"asymptotic"`` (normal
    approximation with tie correction, no continuity correction) otherwise.

    Args:
        x: values of the arm under test (e.g. per-case Dice).
        y: baseline values paired with ``x``; pairs with a non-finite value are dropped.
        min_pairs: fewest finite pairs for which the test is run.

    Returns:
        :class:`WilcoxonResult`; ``reason`` is set and the numbers are NaN when there are too few pairs.
        When every difference is zero the result is ``W+ = 0, p = 1`` (no evidence) with a reason saying so.
    """
    d = paired_differences(x, y)
    n_pairs = int(d.size)
    reason = min_pairs_reason(n_pairs, min_pairs)
    if reason is not None:
        return WilcoxonResult(np.nan, np.nan, n_pairs, int(np.count_nonzero(d)), "none", reason=reason)
    nz = d[d != 0]
    if nz.size == 0:
        return WilcoxonResult(0.0, 1.0, n_pairs, 0, "none", reason="all paired differences are zero")
    ties = np.unique(np.abs(nz)).size < nz.size
    method = "exact" if (nz.size <= WILCOXON_EXACT_MAX_N and not ties) else "asymptotic"
    res = sps.wilcoxon(nz, zero_method=WILCOXON_ZERO_METHOD, alternative="greater", method=method, correction=False)
    return WilcoxonResult(float(res.statistic), float(res.pvalue), n_pairs, int(nz.size), method)


def _t_pvalue(t: float, df: int, alternative: str) -> float:
    if alternative == "greater":
        return float(sps.t.sf(t, df))
    if alternative == "less":
        return float(sps.t.cdf(t, df))
    return float(min(1.0, 2.0 * sps.t.sf(abs(t), df)))


def corrected_resampled_ttest(
    d: Sequence[float],
    n_train: float | Sequence[float],
    n_test: float | Sequence[float],
    *,
    alternative: str = "two-sided",
) -> CorrectedTTestResult:
    """Nadeau & Bengio (2003) corrected resampled t-test on per-split differences.

    Repeated random splits share training (and test) data, so the per-split differences are correlated and the
    plain t-test's variance ``var(d)/J`` is too small. The correction inflates it by the test/train ratio::

        t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1)),   df = J - 1

    where ``J`` is the number of splits and ``d_j`` the mean difference (arm - baseline) in split ``j``.
    When the split sizes vary, ``n_test/n_train`` is the mean of the per-split ratios.

    Args:
        d: per-split mean differences (NaN entries are dropped).
        n_train: training-set size, a scalar or one per split (aligned with ``d``).
        n_test: test-set size, a scalar or one per split.
        alternative: "two-sided", "greater" (``mean(d) > 0``) or "less".

    Returns:
        :class:`CorrectedTTestResult`; with fewer than 2 splits, ``t``/``p`` are NaN and ``reason`` is set.
        With zero variance, ``t`` is ``+-inf`` (or 0 when the mean is 0 too) and ``p`` follows its limit.

    Raises:
        ValueError: for an unknown ``alternative`` or non-positive sizes (programming errors).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', not {alternative!r}")
    da = np.asarray(d, dtype=np.float64).ravel()
    tr = np.broadcast_to(np.asarray(n_train, dtype=np.float64), da.shape)
    te = np.broadcast_to(np.asarray(n_test, dtype=np.float64), da.shape)
    keep = np.isfinite(da)
    da, tr, te = da[keep], tr[keep], te[keep]
    if np.any(tr <= 0) or np.any(te <= 0):
        raise ValueError("n_train and n_test must be positive")
    j = int(da.size)
    ratio = float(np.mean(te / tr)) if j else float("nan")
    mean = float(np.mean(da)) if j else float("nan")
    if j < 2:
        reason = min_pairs_reason(j, 2, "splits")
        return CorrectedTTestResult(np.nan, max(j - 1, 0), np.nan, mean, j, ratio, alternative, reason)
    se = float(np.sqrt((1.0 / j + ratio) * float(np.var(da, ddof=1))))
    t = (0.0 if mean == 0.0 else float(np.sign(mean) * np.inf)) if se == 0.0 else mean / se
    return CorrectedTTestResult(t, j - 1, _t_pvalue(t, j - 1, alternative), mean, j, ratio, alternative, se=se)


def min_detectable_effect(
    d: Sequence[float],
    n_train: float | Sequence[float],
    n_test: float | Sequence[float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """Smallest true mean difference the corrected resampled t-test detects with probability ``power``.

    With ``J`` splits, ``s^2 = var(d, ddof=1)`` of the per-split differences and ``r`` the mean ``n_test/n_train``
    (the standard error of :func:`corrected_resampled_ttest`)::

        SE  = sqrt((1/J + r) * s^2)
        MDE = (t_{1 - alpha/k, J-1} + t_{power, J-1}) * SE,   k = 2 two-sided, k = 1 one-sided

    with ``t_{q, J-1}`` the ``q`` quantile of Student's t on ``J - 1`` df (a two-sided test's far tail neglected).

    Args:
        d: per-split mean differences (NaN entries are dropped).
        n_train: training-set size, a scalar or one per split.
        n_test: test-set size, a scalar or one per split.
        alpha: the test's level (after any multiplicity correction the verdict applies).
        power: the wanted probability of detecting a true effect of size MDE, in (0, 1).
        alternative: "two-sided", "greater" or "less" (the MDE is a magnitude either way).

    Returns:
        The MDE in the units of ``d`` (0 when all splits agree exactly); NaN with fewer than 2 splits.

    Raises:
        ValueError: for ``alpha`` or ``power`` outside (0, 1), an unknown ``alternative`` or non-positive sizes.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must lie in (0, 1), not {alpha} and {power}")
    res = corrected_resampled_ttest(d, n_train, n_test, alternative=alternative)
    if res.n_splits < 2:
        return float("nan")
    k = 2.0 if alternative == "two-sided" else 1.0
    return float((sps.t.ppf(1.0 - alpha / k, res.df) + sps.t.ppf(power, res.df)) * res.se)


def lucky_split_count(split_pvalues: Sequence[float], alpha: float = 0.05) -> tuple[int, int]:
    """On how many single splits the one-split protocol claims a gain: ``#{j : p_j < alpha}``, where ``p_j`` is the
    paired one-sided Wilcoxon test (:func:`wilcoxon_greater`) on split ``j``'s test cases.

    Args:
        split_pvalues: the one-sided Wilcoxon p-value of each split (NaN for a split that was not tested).
        alpha: the single-split protocol's level (0.05 in the paper).

    Returns:
        ``(claims, tested)``: splits with ``p < alpha`` and splits with a finite p-value.
    """
    p = np.asarray(split_pvalues, dtype=np.float64).ravel()
    p = p[np.isfinite(p)]
    return int(np.count_nonzero(p < alpha)), int(p.size)


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: Sequence[object] | None = None,
) -> BootstrapResult:
    """Percentile bootstrap confidence interval of the mean (Efron & Tibshirani 1993, ch. 13).

    Each replicate resamples the values with replacement (within each stratum when ``strata`` is given, so every
    split keeps its size) and takes the mean; the interval is the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the
    ``n_boot`` replicate means. The estimate is the sample mean. Non-finite values are dropped.

    Args:
        values: the case-level values (e.g. paired Dice differences).
        n_boot: number of bootstrap replicates.
        confidence: the interval's nominal coverage, in (0, 1).
        seed: seed of the ``numpy.random.default_rng`` that draws the replicates.
        strata: optional group label per value (e.g. the split); resampling stays inside each group.

    Returns:
        :class:`BootstrapResult`; with fewer than 2 values the bounds are NaN and ``reason`` is set.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    groups = (
        np.zeros(v.shape, dtype=np.int64) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
    )
    if groups.shape != v.shape:
        raise ValueError(f"strata has {groups.size} labels for {v.size} values")
    keep = np.isfinite(v)
    v, groups = v[keep], groups[keep]
    n = int(v.size)
    estimate = float(np.mean(v)) if n else float("nan")
    if n < 2:
        return BootstrapResult(estimate, np.nan, np.nan, n, n_boot, confidence, min_pairs_reason(n, 2, "values"))
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot, dtype=np.float64)
    for g in np.unique(groups):
        vg = v[groups == g]
        idx = rng.integers(0, vg.size, size=(n_boot, vg.size))
        total += vg[idx].sum(axis=1)
    means = total / n
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(estimate, float(low), float(high), n, n_boot, confidence)


def paired_bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: Sequence[object] | None = None,
) -> BootstrapResult:
    """Percentile bootstrap CI of the mean paired difference ``mean(x - y)``, resampling pairs (cases).

    Args:
        x: values of the arm under test.
        y: baseline values paired with ``x``.
        n_boot: number of bootstrap replicates.
        confidence: nominal coverage.
        seed: random seed.
        strata: optional group label per pair (resampling stays inside each group).

    Returns:
        :class:`BootstrapResult` of the mean difference (pairs with a non-finite value are dropped).
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"paired samples differ in length: {xa.size} vs {ya.size}")
    d = xa - ya
    keep = np.isfinite(d)
    s = None if strata is None else np.asarray(strata)[keep]
    return bootstrap_ci(d[keep], n_boot=n_boot, confidence=confidence, seed=seed, strata=s)


def cohens_dz(d: Sequence[float]) -> float:
    """Paired effect size Cohen's ``d_z = mean(d) / sd(d, ddof=1)`` (Cohen 1988; Lakens 2013, eq. 7).

    Args:
        d: paired differences (non-finite entries dropped).

    Returns:
        ``d_z``; NaN with fewer than 2 differences; ``+-inf`` (or 0) when all differences are equal.
    """
    da = np.asarray(d, dtype=np.float64).ravel()
    da = da[np.isfinite(da)]
    if da.size < 2:
        return float("nan")
    mean, sd = float(np.mean(da)), float(np.std(da, ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else float(np.sign(mean) * np.inf)
    return mean / sd


def rank_biserial(d: Sequence[float]) -> float:
    """Matched-pairs rank-biserial correlation ``r = (R+ - R-) / (R+ + R-)`` (Kerby 2014).

    ``R+``/``R-`` are the sums of the ranks of ``|d|`` over the positive/negative differences, zeros dropped
    (consistent with the Wilcoxon test's ``zero_method="wilcox"``). Ranges from -1 (all worse) to 1 (all better).

    Args:
        d: paired differences (non-finite entries dropped).

    Returns:
        ``r``; NaN when no non-zero difference remains.
    """
    da = np.asarray(d, dtype=np.float64).ravel()
    da = da[np.isfinite(da) & (da != 0)]
    if da.size == 0:
        return float("nan")
    ranks = sps.rankdata(np.abs(da))
    r_plus, r_minus = float(ranks[da > 0].sum()), float(ranks[da < 0].sum())
    return (r_plus - r_minus) / (r_plus + r_minus)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, computed explicitly.

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        p_adj_(i) = min(1, max_{k <= i} (m - k + 1) * p_(k))

    which is monotone in ``i`` and capped at 1. Rejecting ``p_adj <= alpha`` controls the family-wise error rate
    at ``alpha``. NaN entries are not counted in ``m`` and stay NaN.

    Args:
        pvalues: raw p-values, in any order.

    Returns:
        Adjusted p-values in the input order.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out
