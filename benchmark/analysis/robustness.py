"""Robustness under distribution shift: Dice / HD95 against severity per arm, and each arm against ``real`` under
every shift with the main table's tests.

Reads robustness rows (``benchmark.results.SHIFT_COLUMNS``: the per-case schema plus ``shift`` and ``severity``) and,
for the clean point of each curve (severity 0), the study's segmentation rows of the same segmenters. For every shift
and severity, :func:`benchmark.analysis.significance.significance_table` compares each arm with the baseline on the
shifted cases (corrected resampled t-test across splits, Holm across the arms of that shift, severity, metric and
training-data fraction; an arm at a fraction against the baseline at that fraction), so "synthetic data made the
segmenter more robust to X" is read off the same kind of verdict as the main table's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.analysis.html_parts import esc, img, msg, table_html
from benchmark.analysis.plots import _require, _save
from benchmark.analysis.significance import significance_table
from benchmark.analysis.tables import write_table
from benchmark.errors import DataError

__all__ = ["plot_severity_curves", "robustness_section", "shift_significance", "verdict_lines"]

METRICS = ("dice", "hd95")
TABLE_COLUMNS = [
    "shift", "severity", "arm", "metric", "verdict", "mean_diff", "t_ci_low", "t_ci_high", "p_holm", "mde",
    "n_pairs", "n_splits", "reason",
]  # fmt: skip
_LEVEL_NAMES = {"site": "site B", "external": "external"}


def _numeric(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(value=pd.to_numeric(rows["value"], errors="coerce"), severity=rows["severity"].astype(int))


def _sizes(rows: pd.DataFrame, split_sizes: Any) -> pd.DataFrame | None:
    """Train sizes of the study's splits with the number of cases each split was tested on under this shift."""
    if split_sizes is None:
        return None
    sizes = pd.DataFrame(split_sizes).assign(split=lambda f: f["split"].astype(str))
    tested = rows.assign(split=rows["split"].astype(str)).groupby("split")["case_id"].nunique()
    sizes["n_test"] = sizes["split"].map(tested).fillna(sizes["n_test"])
    return sizes


def shift_significance(
    robust_rows: pd.DataFrame, split_sizes: Any, *, baseline: str = "real", alpha: float = 0.05, **options: Any
) -> pd.DataFrame:
    """Each arm against the baseline under every shift and severity, for Dice and HD95.

    Args:
        robust_rows: robustness rows (``shift`` and ``severity`` columns).
        split_sizes: train/test sizes per split (the test size is replaced by the number of cases each split was
            tested on under the shift: an external set's size, for instance).
        baseline: the reference arm.
        alpha: the verdicts' level.
        **options: passed to :func:`~benchmark.analysis.significance.significance_table` (``min_pairs``, ``arms``).

    Returns:
        ``significance_table``'s columns plus ``shift`` and ``severity`` (first), one block per shift, severity
        and metric; Holm's family is the arms of one block and training-data fraction, each arm paired with the
        baseline at its own fraction (``significance_table``).
    """
    rows = _require(robust_rows, ("shift", "severity", "arm", "metric", "value"), "robust_rows")
    rows = _numeric(rows)
    tables = []
    for (shift, severity), group in rows.groupby(["shift", "severity"], sort=True):
        sizes = _sizes(group, split_sizes)
        for metric in METRICS:
            table = significance_table(group, sizes, metric=metric, baseline=baseline, alpha=alpha, **options)
            tables.append(table.assign(shift=shift, severity=int(severity)))
    out = pd.concat(tables, ignore_index=True)
    return out[["shift", "severity", *[c for c in out.columns if c not in ("shift", "severity")]]]


def verdict_lines(significance: pd.DataFrame, metric: str = "dice", scale: float = 100.0) -> list[str]:
    """One line per arm and shift: the verdict at each severity, with the mean difference to the baseline.

    Args:
        significance: :func:`shift_significance` output.
        metric: the metric the line speaks of.
        scale: from the metric's units to the line's (100: Dice points).

    Returns:
        e.g. ``"real+spade_ldm under noise: no evidence at every severity (Dice vs real, points: s1 +0.3
        [-0.9, +1.5]; s2 ...)"``.
    """
    pooled = significance[(significance["scope"] == "pooled") & (significance["metric"] == metric)]
    lines = []
    for (arm, shift), group in pooled.groupby(["arm", "shift"], sort=False):
        group = group.sort_values("severity")
        verdicts = dict(zip(group["severity"], group["verdict"].replace("", "not tested"), strict=True))
        if len(set(verdicts.values())) == 1:
            said = next(iter(verdicts.values())) + (" at every severity" if len(verdicts) > 1 else "")
        else:
            by: dict[str, list[str]] = {}
            for sev, verdict in verdicts.items():
                by.setdefault(verdict, []).append(str(sev))
            said = "; ".join(f"{v} at severity {', '.join(s)}" for v, s in by.items())
        diffs = "; ".join(_diff(r, scale, len(group) > 1) for r in group.itertuples())
        unit = "points" if scale == 100.0 else "mm"
        name = {"dice": "Dice", "hd95": "HD95"}.get(metric, metric)
        lines.append(f"{arm} under {shift}: {said} ({name} vs {group['baseline'].iloc[0]}, {unit}: {diffs})")
    return lines


def _diff(r: Any, scale: float, label: bool) -> str:
    head = f"s{r.severity} " if label else ""
    if not np.isfinite(r.mean_diff):
        return f"{head}n/a"
    if not np.isfinite(r.t_ci_low):
        return f"{head}{r.mean_diff * scale:+.2f}"
    return f"{head}{r.mean_diff * scale:+.2f} [{r.t_ci_low * scale:+.2f}, {r.t_ci_high * scale:+.2f}]"


def plot_severity_curves(
    robust_rows: pd.DataFrame, seg_rows: pd.DataFrame | None, shift: str, stem: str | Path
) -> dict[str, Path]:
    """Dice and HD95 against severity for one shift family, one line per arm (mean over cases, splits, seeds).

    Severity 0 is the clean test set: the same segmenters' rows of their segmentation jobs.

    Args:
        robust_rows: robustness rows.
        seg_rows: the study's per-case segmentation rows (None: curves without the clean point).
        shift: the family to draw.
        stem: output path without suffix.

    Returns:
        ``{"png": path, "svg": path}``.

    Raises:
        DataError: when the family has no finite rows.
    """
    rows = _numeric(_require(robust_rows, ("shift", "severity", "arm", "metric", "value"), "robust_rows"))
    rows = rows[(rows["shift"] == shift) & np.isfinite(rows["value"])]
    if rows.empty:
        raise DataError("robust_rows", f"no finite values for shift {shift!r}")
    if seg_rows is not None and len(seg_rows):
        clean = seg_rows[seg_rows["arm"].isin(set(rows["arm"]))]
        rows = pd.concat([rows, _numeric(clean.assign(shift=shift, severity=0))[rows.columns]], ignore_index=True)
    arms = sorted(pd.unique(rows["arm"]), key=lambda a: (a != "real", a))
    levels = sorted(rows["severity"].unique())
    fig, axes = plt.subplots(1, len(METRICS), figsize=(9.5, 3.4))
    for ax, metric in zip(axes, METRICS, strict=True):
        means = rows[rows["metric"] == metric].groupby(["arm", "severity"])["value"].mean().unstack("severity")
        for arm in arms:
            if arm in means.index:
                line = means.loc[arm].reindex(levels).to_numpy(dtype=float)
                ax.plot(levels, line, "o-", lw=2.0 if arm == "real" else 1.2, ms=4, label=arm)
        ax.set_xticks(levels, [_level_name(shift, s) for s in levels], fontsize=8)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_ylabel({"dice": "Dice", "hd95": "HD95 (mm)"}[metric], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{shift}: mean over cases, splits and seeds", fontsize=9)
    fig.tight_layout()
    return _save(fig, stem)


def _level_name(shift: str, severity: int) -> str:
    return "clean" if severity == 0 else _LEVEL_NAMES.get(shift, str(severity))


def robustness_section(
    robust_rows: pd.DataFrame,
    seg_rows: pd.DataFrame | None,
    split_sizes: Any,
    files: Path,
    *,
    baseline: str = "real",
    alpha: float = 0.05,
    arms: Sequence[str] | None = None,
) -> str:
    """The report's robustness section: a verdict line per arm and shift, the curves, the table (also written as
    ``robustness_significance`` CSV / Markdown / LaTeX in ``files``).

    Args:
        robust_rows: robustness rows (empty: a message saying none finished).
        seg_rows: the study's segmentation rows (the curves' clean point).
        split_sizes: train/test sizes per split.
        files: the report's files folder.
        baseline, alpha, arms: as the main significance table.

    Returns:
        The section's HTML.
    """
    if robust_rows is None or len(robust_rows) == 0:
        return msg("No robustness rows: the study's robustness jobs have not finished (launchers/robustness.py).")
    sig = shift_significance(robust_rows, split_sizes, baseline=baseline, alpha=alpha, arms=arms)
    pooled = sig[sig["scope"] == "pooled"]
    write_table(pooled[TABLE_COLUMNS], files / "robustness_significance")
    own = " (an arm at a training-data fraction: at that fraction)" if pooled["baseline"].nunique() > 1 else ""
    parts = [
        f"<p>Each arm against <code>{esc(baseline)}</code>{own} on the shifted test sets (same corrected resampled "
        "t-test as the main table, Holm across the arms of each shift, severity, metric and fraction, alpha "
        f"{alpha:g}). Dice differences in points, with the corrected t interval:</p>",
        "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in verdict_lines(sig)) + "</ul>",
    ]
    for shift in pd.unique(robust_rows["shift"]):
        try:
            png = plot_severity_curves(robust_rows, seg_rows, str(shift), files / f"robustness_{shift}")["png"]
            parts.append(img(png, f"{shift} curves", caption=f"Dice and HD95 against severity: {shift}"))
        except DataError as exc:
            parts.append(msg(f"Curves of {shift} not drawn: {exc}"))
    parts.append(table_html(pooled[TABLE_COLUMNS], 4))
    return "\n".join(parts)
