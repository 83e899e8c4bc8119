"""The report's training-data fraction section (``segmentation.fractions``): Dice against the fraction of the
training patients, per arm, with the mean over splits and seeds and its 95% t-interval, and the per-split points.

An arm trained at fraction ``f`` below 1 has the folder (and row arm) ``<arm>@f<f>``
(``benchmark.segmentation.fractions``); this module reads the fraction back from that name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.analysis.html_parts import img, table_html
from benchmark.analysis.plots import _require, _save, plt
from benchmark.errors import DataError
from benchmark.segmentation.fractions import split_suffix

STEM = "dice_vs_fraction"


def fraction_frame(seg_rows: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean ``metric`` per arm, fraction, split and seed (a point of the plot), from the per-case rows.

    Args:
        seg_rows: per-case rows (``arm``, ``split``, ``seed``, ``metric``, ``value``).
        metric: the metric to average.

    Returns:
        Columns ``arm`` (without its fraction part), ``fraction``, ``split``, ``seed``, ``value``.
    """
    rows = _require(seg_rows, ("arm", "split", "seed", "metric", "value"), "seg_rows")
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise DataError("seg_rows", f"no {metric} rows")
    parts = rows["arm"].astype(str).map(split_suffix)
    rows = rows.assign(arm=[p[0] for p in parts], fraction=[p[1] for p in parts])
    means = rows.groupby(["arm", "fraction", "split", "seed"], as_index=False)["value"].mean()
    return means.sort_values(["arm", "fraction", "split", "seed"], ignore_index=True)


def fraction_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per arm and fraction: the mean of the split x seed means, its 95% t-interval and the number of them.

    Args:
        points: ``fraction_frame``'s output.
    """
    out = []
    for (arm, fraction), g in points.groupby(["arm", "fraction"], sort=True):
        v = g["value"].to_numpy(float)
        mean, n = float(np.mean(v)), len(v)
        half = float(sps.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        out.append({"arm": arm, "fraction": fraction, "mean": mean, "ci_low": mean - half, "ci_high": mean + half,
                    "n": n})  # fmt: skip
    return pd.DataFrame(out, columns=["arm", "fraction", "mean", "ci_low", "ci_high", "n"])


def plot_dice_vs_fraction(points: pd.DataFrame, stem: str | Path) -> dict[str, Path]:
    """Dice against the training-data fraction: one line per arm (mean over splits and seeds, 95% t-interval as
    error bars), the split x seed means as small points.

    Args:
        points: ``fraction_frame``'s output.
        stem: output path without suffix (``.png`` and ``.svg`` are written).
    """
    _require(points, ("arm", "fraction", "value"), "points")
    summary = fraction_summary(points)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    arms = sorted(summary["arm"].unique(), key=lambda a: (a != "real", a))
    for k, arm in enumerate(arms):
        s = summary[summary["arm"] == arm]
        p = points[points["arm"] == arm]
        dx = (k - (len(arms) - 1) / 2) * 0.008  # a small dodge so the arms' bars do not hide each other
        err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
        line = ax.errorbar(s["fraction"] + dx, s["mean"], yerr=np.nan_to_num(err), marker="o", capsize=3, label=arm)
        ax.scatter(p["fraction"] + dx, p["value"], s=10, alpha=0.4, color=line[0].get_color())
    ax.set_xlabel("fraction of the split's training patients")
    ax.set_ylabel("Dice (mean over test cases)")
    ax.set_xticks(sorted(summary["fraction"].unique()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def fraction_section(seg_rows: pd.DataFrame | None, files: Path) -> tuple[str, Path | None]:
    """The section's HTML (a table of mean Dice per arm and fraction) and the plot's PNG, when the rows hold more
    than one fraction; ``("", None)`` otherwise, so a study without the axis has no such section.

    Args:
        seg_rows: per-case segmentation rows.
        files: the report's files folder (the plot is ``<files>/dice_vs_fraction.png``).
    """
    try:
        points = fraction_frame(seg_rows)
    except DataError:
        return "", None
    if points["fraction"].nunique() < 2:
        return "", None
    png = plot_dice_vs_fraction(points, files / STEM)["png"]
    table = fraction_summary(points)
    text = (
        "<p>Each arm trained on a nested, seeded subset of each split's training patients "
        "(<code>segmentation.fractions</code>; synthetic, augmented and oracle volumes scale with the subset). "
        "Mean Dice over the split x seed means, with its 95% t-interval and their number <code>n</code>.</p>"
    )
    return text + table_html(table, 4) + img(png, "Dice vs training-data fraction"), png


def fraction_note(seg_rows: pd.DataFrame | None) -> str | None:
    """A note when an arm's fraction is below 1: the significance tables compare it with the baseline at its fraction.

    Args:
        seg_rows: per-case segmentation rows.
    """
    if seg_rows is None or seg_rows.empty or "arm" not in seg_rows:
        return None
    if all(split_suffix(str(a))[1] == 1.0 for a in seg_rows["arm"].unique()):
        return None
    return (
        "arms named <arm>@f<f> trained on a fraction f of each split's training patients (segmentation.fractions); "
        "the significance tables compare each with real at the same fraction (real@f<f>, on the same test cases; "
        "Holm's family is the arms of one fraction) and real@f<f> with the full-data real; the section "
        "'Training-data fraction' shows Dice against the fraction"
    )
