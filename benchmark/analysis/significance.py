"""Significance of each segmentation arm against the baseline, across cases, seeds and repeated splits.

For every arm the table holds one row per split (the paired one-sided Wilcoxon signed-rank test on per-case
values, the paper's test) and one pooled row (the Nadeau-Bengio corrected resampled t-test on the per-split mean
differences, a case-level bootstrap CI, effect sizes, the Holm-adjusted p-value across arms and a verdict).
An arm that cannot be tested still gets its rows, with a ``reason``; nothing is dropped silently.

An arm trained on a fraction of each split's training patients (``<arm>@f<f>``, ``segmentation.fractions``) is
compared with the baseline at the same fraction (``real@f<f>``, the same test cases), and the fraction's baseline
itself with the full-data baseline; Holm's family is the arms of one fraction (:func:`baseline_of`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark import stats
from benchmark.errors import DataError
from benchmark.segmentation.fractions import split_suffix, suffix

__all__ = [
    "COLUMNS", "LOWER_IS_BETTER", "POWER", "SINGLE_SPLIT_ALPHA", "baseline_of", "main_baseline",
    "normalise_split_sizes", "significance_table",
]  # fmt: skip

LOWER_IS_BETTER = frozenset({"hd95", "assd"})
POWER = 0.8  # of the minimum detectable effect
SINGLE_SPLIT_ALPHA = 0.05  # the paper's one-split protocol: one-tailed paired Wilcoxon, p < 0.05
REQUIRED = ("split", "arm", "case_id", "metric", "value")
COLUMNS = [
    "arm", "baseline", "metric", "scope", "split", "n_pairs", "n_splits", "mean_diff", "ci_low", "ci_high",
    "effect_dz", "rank_biserial", "wilcoxon_stat", "wilcoxon_p", "wilcoxon_p_holm", "wilcoxon_method",
    "t_stat", "df", "test_train_ratio", "t_se", "t_ci_low", "t_ci_high", "t_p", "t_p_greater", "p_holm", "alpha",
    "verdict", "mde", "mde_alpha", "lucky_splits", "reason", "note",
]  # fmt: skip


def normalise_split_sizes(split_sizes: Any) -> dict[str, tuple[float, float]]:
    """Turn split sizes into ``{split (str): (n_train, n_test)}``.

    Args:
        split_sizes: a DataFrame with columns ``split, n_train, n_test``; or a mapping from split to a
            ``(n_train, n_test)`` pair or to a mapping with keys ``n_train``/``n_test``; or None.

    Returns:
        The normalised mapping (empty for None).

    Raises:
        DataError: when the columns or entries are malformed (names the offending field).
    """
    if split_sizes is None:
        return {}
    if isinstance(split_sizes, pd.DataFrame):
        missing = {"split", "n_train", "n_test"} - set(split_sizes.columns)
        if missing:
            raise DataError("split_sizes", f"missing columns {sorted(missing)}")
        return {str(r.split): (float(r.n_train), float(r.n_test)) for r in split_sizes.itertuples()}
    out: dict[str, tuple[float, float]] = {}
    for key, val in dict(split_sizes).items():
        if isinstance(val, Mapping):
            if "n_train" not in val or "n_test" not in val:
                raise DataError("split_sizes", f"split {key!r} needs n_train and n_test")
            out[str(key)] = (float(val["n_train"]), float(val["n_test"]))
        else:
            n_train, n_test = val
            out[str(key)] = (float(n_train), float(n_test))
    return out


def baseline_of(arm: str, baseline: str = "real") -> str:
    """The arm ``arm`` is compared with: ``baseline`` at the arm's training-data fraction.

    ``real+x@r2@f0.5`` -> ``real@f0.5`` (the ratio changes only the synthetic count, so it keeps the plain baseline);
    ``real@f0.5`` itself -> ``real`` (what the rest of the training patients give); a full-data arm -> ``baseline``.
    A ``baseline`` that names a fraction itself is taken as given for every arm.

    Args:
        arm: the arm's name (folder), with its ``@r``/``@f`` parts.
        baseline: the full-data reference arm.
    """
    if split_suffix(baseline)[1] != 1.0:
        return baseline
    own = baseline + suffix(split_suffix(arm)[1])
    return baseline if arm == own else own


def main_baseline(significance: pd.DataFrame | None, default: str = "real") -> str:
    """The full-data baseline of a significance table (its arms at a fraction have ``<baseline>@f<f>``).

    Args:
        significance: :func:`significance_table` output (``baseline`` column), or None.
        default: returned when the table is empty.
    """
    if significance is None or len(significance) == 0:
        return default
    names = [str(b) for b in pd.unique(significance["baseline"])]
    return next((b for b in names if split_suffix(b)[1] == 1.0), names[0])


def _family(arm: str) -> float:
    """Holm's family of an arm: its training-data fraction (1.0 without an ``@f`` part)."""
    return split_suffix(str(arm))[1]


def _at_fraction(sizes: dict[str, tuple[float, float]], fraction: float) -> dict[str, tuple[float, float]]:
    """Split sizes with ``n_train`` scaled by a training-data fraction: the corrected t-test's ``n_test/n_train``
    is that of the segmenters compared (``real@f<f>`` against ``real``: the smaller, the more conservative)."""
    return sizes if fraction == 1.0 else {k: (n_train * fraction, n_test) for k, (n_train, n_test) in sizes.items()}


def _empty_row(arm: str, baseline: str, metric: str, scope: str, split: str, alpha: float) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
    row.update(arm=arm, baseline=baseline, metric=metric, scope=scope, split=split, alpha=alpha)
    row.update(n_pairs=0, n_splits=0, wilcoxon_method="", verdict="", reason="", note="")
    return row


def _prepare(seg_rows: pd.DataFrame | None, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``metric`` with string split keys, and the pairing keys present in the frame."""
    if seg_rows is None or len(seg_rows) == 0:
        return pd.DataFrame(columns=[*REQUIRED, "seed"]), ["split", "seed", "case_id"]
    missing = [c for c in REQUIRED if c not in seg_rows.columns]
    if missing:
        raise DataError("seg_rows", f"missing columns {missing} (need {list(REQUIRED)})")
    rows = seg_rows[seg_rows["metric"] == metric].copy()
    if "seed" not in rows.columns:
        rows["seed"] = 0
    rows["split"] = rows["split"].astype(str)
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    keys = (["study"] if "study" in rows.columns else []) + ["split", "seed", "case_id"]
    return rows, keys


def _nan_note(rows: pd.DataFrame) -> str:
    """Count NaN values and name their most common reasons: such cases cannot be paired."""
    bad = rows[~np.isfinite(rows["value"].to_numpy(dtype=np.float64))]
    if bad.empty:
        return ""
    reasons = bad["reason"].fillna("no reason").astype(str) if "reason" in bad.columns else pd.Series(["no reason"])
    top = ", ".join(f"{r} ({c})" for r, c in reasons.value_counts().head(3).items())
    return f"{len(bad)} row(s) with NaN value left unpaired: {top}"


def _pairs(arm_rows: pd.DataFrame, base_rows: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, str]:
    """Per-case pairs averaged over seeds; returns columns ``split, case_id, x, y`` and a note on duplicates."""
    notes = []
    sides = []
    for name, frame in (("x", arm_rows), ("y", base_rows)):
        frame = frame[np.isfinite(frame["value"].to_numpy(dtype=np.float64))]
        dup = int(frame.duplicated(keys).sum())
        if dup:
            notes.append(f"{dup} duplicate {'arm' if name == 'x' else 'baseline'} row(s) averaged")
        sides.append(frame.groupby(keys, as_index=False, dropna=False)["value"].mean().rename(columns={"value": name}))
    merged = sides[0].merge(sides[1], on=keys, how="inner")
    # Seeds of one case in one split are not independent observations: average them before testing.
    case_keys = [k for k in keys if k != "seed"]
    per_case = merged.groupby(case_keys, as_index=False, dropna=False)[["x", "y"]].mean()
    return per_case, "; ".join(notes)


def _split_row(base: dict[str, Any], pairs: pd.DataFrame, sign: float, min_pairs: int, boot: dict) -> dict[str, Any]:
    row = dict(base)
    x, y = pairs["x"].to_numpy(), pairs["y"].to_numpy()
    res = stats.wilcoxon_greater(sign * x, sign * y, min_pairs=min_pairs)
    row.update(n_pairs=res.n_pairs, n_splits=1, wilcoxon_stat=res.statistic, wilcoxon_p=res.p)
    method = f"{res.method}, zero_method={res.zero_method}" if np.isfinite(res.p) else ""
    row.update(wilcoxon_method=method, reason=res.reason or "")
    if res.n_pairs:
        ci = stats.paired_bootstrap_ci(x, y, **boot)
        d = sign * (x - y)
        row.update(mean_diff=float(np.mean(x - y)), ci_low=ci.low, ci_high=ci.high)
        row.update(effect_dz=stats.cohens_dz(d), rank_biserial=stats.rank_biserial(d))
    return row


def _pooled_row(
    base: dict[str, Any],
    pairs: pd.DataFrame,
    usable: list[str],
    sizes: dict[str, tuple[float, float]],
    sign: float,
    boot: dict,
) -> dict[str, Any]:
    row = dict(base)
    pairs = pairs[pairs["split"].isin(usable)]
    row.update(n_pairs=len(pairs), n_splits=len(usable))
    if pairs.empty:
        row["reason"] = "no split has enough paired cases"
        return row
    x, y = pairs["x"].to_numpy(), pairs["y"].to_numpy()
    d = sign * (x - y)
    ci = stats.paired_bootstrap_ci(x, y, strata=pairs["split"].to_numpy(), **boot)
    row.update(mean_diff=float(np.mean(x - y)), ci_low=ci.low, ci_high=ci.high)
    row.update(effect_dz=stats.cohens_dz(d), rank_biserial=stats.rank_biserial(d))
    no_size = [s for s in usable if s not in sizes]
    if no_size:
        row["reason"] = f"no train/test sizes for split(s) {no_size}: corrected t-test not run"
        return row
    split_means = pairs.assign(d=d).groupby("split")["d"].mean().reindex(usable).to_numpy()
    n_train = [sizes[s][0] for s in usable]
    n_test = [sizes[s][1] for s in usable]
    two = stats.corrected_resampled_ttest(split_means, n_train, n_test, alternative="two-sided")
    one = stats.corrected_resampled_ttest(split_means, n_train, n_test, alternative="greater")
    row.update(t_stat=two.t, df=two.df, test_train_ratio=two.test_train_ratio, t_p=two.p, t_p_greater=one.p)
    if np.isfinite(two.se):  # the corrected t interval of the mean difference, in the metric's own direction
        half = float(sps.t.ppf(1.0 - base["alpha"] / 2.0, two.df)) * two.se
        row.update(t_se=two.se, t_ci_low=row["mean_diff"] - half, t_ci_high=row["mean_diff"] + half)
    if two.reason:
        row["reason"] = f"corrected t-test needs >= 2 splits: {two.reason}"
    return row


def _arm_rows(
    arm: str,
    rows: pd.DataFrame,
    keys: list[str],
    sizes: dict[str, tuple[float, float]],
    opts: dict[str, Any],
) -> list[dict[str, Any]]:
    baseline, metric, alpha, min_pairs = opts["baseline"], opts["metric"], opts["alpha"], opts["min_pairs"]
    baseline = baseline_of(arm, baseline)
    base_rows = rows[rows["arm"] == baseline]
    sizes = _at_fraction(sizes, _family(arm))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    pooled = _empty_row(arm, baseline, metric, "pooled", "all", alpha)
    arm_rows = rows[rows["arm"] == arm]
    if arm_rows.empty:
        pooled["reason"] = f"no per-case '{metric}' rows for arm '{arm}' (runs missing or without per-case results)"
        return [pooled]
    if base_rows.empty:
        pooled["reason"] = f"baseline '{baseline}' has no per-case '{metric}' rows"
        return [pooled]
    pairs, dup_note = _pairs(arm_rows, base_rows, keys)
    notes = [n for n in (_nan_note(arm_rows), dup_note) if n]
    if pairs.empty:
        pooled.update(reason=f"no case matched the baseline on {keys}", note="; ".join(notes))
        return [pooled]
    out, usable = [], []
    for split in sorted(pairs["split"].unique(), key=_split_sort_key):
        row = _split_row(
            _empty_row(arm, baseline, metric, "split", split, alpha),
            pairs[pairs["split"] == split],
            sign,
            min_pairs,
            opts["boot"],
        )
        if row["reason"]:
            row["reason"] += "; split left out of the pooled tests"
        else:
            usable.append(split)
        out.append(row)
    pooled = _pooled_row(pooled, pairs, usable, sizes, sign, opts["boot"])
    left_out = [r["split"] for r in out if r["reason"]]
    if left_out:
        notes.append(f"split(s) {', '.join(left_out)} have < {min_pairs} pairs and are left out")
    pooled["note"] = "; ".join(notes)
    return [*out, pooled]


def _split_sort_key(split: str) -> tuple[int, Any]:
    return (0, int(split)) if split.lstrip("-").isdigit() else (1, split)


def _verdicts(table: pd.DataFrame, alpha: float, metric: str, sizes: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Holm's adjustment, the verdicts, MDE and lucky splits; one Holm family per training-data fraction."""
    family = table["arm"].map(_family)
    for fraction in family.unique():
        member = (family == fraction).to_numpy()
        _family_verdicts(table, member, fraction, alpha, metric, _at_fraction(sizes, fraction))
    return table


def _family_verdicts(table: pd.DataFrame, member: np.ndarray, fraction: float, alpha: float, metric: str,
                     sizes: dict[str, tuple[float, float]]) -> None:  # fmt: skip
    pooled = member & (table["scope"] == "pooled").to_numpy()
    padj = stats.holm(table.loc[pooled, "t_p"].to_numpy(dtype=np.float64))
    table.loc[pooled, "p_holm"] = padj
    m = int(np.isfinite(padj).sum())
    better = "higher" if metric not in LOWER_IS_BETTER else "lower"
    at = "" if fraction == 1.0 else f" at training-data fraction {fraction:g}"
    for idx in table.index[pooled]:
        p, mean = table.at[idx, "p_holm"], table.at[idx, "mean_diff"]
        _power_and_luck(table, idx, alpha / max(m, 1), -1.0 if better == "lower" else 1.0, sizes)
        if not np.isfinite(p):
            table.at[idx, "verdict"] = "not tested"
            continue
        improved = (mean > 0) == (better == "higher")
        table.at[idx, "verdict"] = ("improves" if improved else "worse") if p < alpha else "no evidence"
        holm_note = f"Holm step-down over m={m} arm(s){at} on the two-sided corrected t p-values; {better} is better"
        table.at[idx, "note"] = "; ".join(n for n in (table.at[idx, "note"], holm_note) if n)
    split_rows = member & (table["scope"] == "split").to_numpy()
    for split in table.loc[split_rows, "split"].unique():
        sel = split_rows & (table["split"] == split).to_numpy()
        table.loc[sel, "wilcoxon_p_holm"] = stats.holm(table.loc[sel, "wilcoxon_p"].to_numpy(dtype=np.float64))


def _power_and_luck(table: pd.DataFrame, idx: Any, level: float, sign: float, sizes: dict) -> None:
    """The pooled row's minimum detectable effect and lucky-split count, from the arm's tested split rows.

    The MDE is at ``level = alpha / m``: Holm's procedure rejects every p-value below it whatever the other arms
    give, so a true effect of the MDE is called with at least 80% power by the verdict as made.
    """
    arm = table.at[idx, "arm"]
    splits = table[(table["scope"] == "split") & (table["arm"] == arm) & (table["reason"] == "")]
    claims, tested = stats.lucky_split_count(splits["wilcoxon_p"].to_numpy(dtype=np.float64), SINGLE_SPLIT_ALPHA)
    table.at[idx, "lucky_splits"] = claims if tested else np.nan
    if all(s in sizes for s in splits["split"]) and len(splits) >= 2:
        d = sign * splits["mean_diff"].to_numpy(dtype=np.float64)
        n_train, n_test = ([sizes[s][i] for s in splits["split"]] for i in (0, 1))
        table.at[idx, "mde"] = stats.min_detectable_effect(d, n_train, n_test, alpha=level, power=POWER)
        table.at[idx, "mde_alpha"] = level


def significance_table(
    seg_rows: pd.DataFrame | None,
    split_sizes: Any,
    *,
    alpha: float = 0.05,
    metric: str = "dice",
    baseline: str = "real",
    min_pairs: int = 5,
    arms: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare every arm with the baseline on per-case ``metric`` values.

    Pairs are matched on ``(study, split, seed, case_id)`` and averaged over seeds per case (repeated seeds of one case
    are not independent). For each arm and each split with at least ``min_pairs`` pairs: the paired one-sided Wilcoxon
    signed-rank test "arm better than baseline" (:func:`benchmark.stats.wilcoxon_greater`), Holm-adjusted across the
    arms of one fraction within the split (``wilcoxon_p_holm``). Pooled over those splits: the Nadeau-Bengio corrected
    resampled t-test on the per-split mean differences with the mean ``n_test/n_train`` ratio (``t_p`` two-sided,
    ``t_p_greater`` one-sided), a split-stratified case-level bootstrap CI of the mean difference, Cohen's ``d_z`` and
    the rank-biserial correlation (positive = arm better), and ``p_holm``: the Holm step-down adjustment of ``t_p`` over
    the arms tested at the arm's training-data fraction. The verdict is "improves"/"worse" when ``p_holm < alpha``
    (direction from the sign of the mean difference), "no evidence" otherwise, and "not tested" (with ``reason``) when
    the test could not run. Beside it: ``t_ci_low``/``t_ci_high``, the ``1 - alpha`` corrected t interval of the mean
    difference; ``mde``, the minimum detectable effect at 80% power of the two-sided corrected t-test at ``mde_alpha =
    alpha / m`` (m arms in the Holm family; see :func:`benchmark.stats.min_detectable_effect`), a magnitude in the
    metric's units; and ``lucky_splits``, on how many of the ``n_splits`` splits the one-split protocol (one-sided
    Wilcoxon, p < 0.05) claims a gain.

    Args:
        seg_rows: per-case rows with columns ``split, arm, case_id, metric, value`` (``seed``, ``study`` and
            ``reason`` optional). NaN values are left unpaired and counted in ``note``.
        split_sizes: train/test sizes per split (see :func:`normalise_split_sizes`).
        alpha: significance level of the verdict.
        metric: which metric to compare ("dice" is higher-better; "hd95" and "assd" lower-better).
        baseline: the reference arm at full data; an arm at a training-data fraction is compared with it at the
            same fraction (``real@f0.5``), and that arm with ``baseline`` itself (:func:`baseline_of`).
        min_pairs: fewest paired cases for a split to be tested and pooled.
        arms: arms expected (e.g. from the study config); those without rows still get a row with a reason.
        n_boot: bootstrap replicates.
        confidence: the bootstrap interval's coverage.
        seed: the bootstrap's random seed.

    Returns:
        DataFrame with :data:`COLUMNS`; ``scope`` is "split" or "pooled" (one pooled row per arm).
        ``mean_diff``, ``ci_low``, ``ci_high`` are arm minus baseline in the metric's units.

    Raises:
        DataError: when ``seg_rows`` lacks a required column or ``split_sizes`` is malformed.
    """
    rows, keys = _prepare(seg_rows, metric)
    sizes = normalise_split_sizes(split_sizes)
    present = [a for a in pd.unique(rows["arm"]) if a != baseline]
    wanted = [a for a in (arms or []) if a != baseline]
    all_arms = list(dict.fromkeys([*wanted, *present]))
    opts = {"baseline": baseline, "metric": metric, "alpha": alpha, "min_pairs": min_pairs}
    opts["boot"] = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    if not all_arms:
        row = _empty_row("(none)", baseline, metric, "pooled", "all", alpha)
        row.update(verdict="not tested", reason=f"no per-case '{metric}' rows for any arm other than '{baseline}'")
        return pd.DataFrame([row], columns=COLUMNS)
    out = [r for arm in all_arms for r in _arm_rows(arm, rows, keys, sizes, opts)]
    table = pd.DataFrame(out, columns=COLUMNS)
    table["df"] = table["df"].astype("Int64")
    table = _verdicts(table, alpha, metric, sizes)
    table["lucky_splits"] = table["lucky_splits"].astype("Int64")
    return table.reset_index(drop=True)
