"""Figures of a study, each written as PNG and SVG (matplotlib's Agg backend, no display needed).

Every function takes a tidy frame (or arrays), writes ``<stem>.png`` and ``<stem>.svg`` atomically and returns
``{"png": path, "svg": path}``. Empty input raises :class:`benchmark.errors.DataError` naming the argument, so the
report can say which figure is missing and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.atomic import atomic_path
from benchmark.errors import DataError  # noqa: E402

__all__ = [
    "plot_forest",
    "plot_metric_per_arm",
    "plot_k_selection",
    "plot_montage",
    "plot_quality",
    "plot_training_curves",
    "report_figures",
]


def _save(fig: plt.Figure, stem: str | Path, dpi: int = 120) -> dict[str, Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    try:
        for fmt in ("png", "svg"):
            path = stem.with_name(f"{stem.name}.{fmt}")
            # No creation date and fixed SVG ids: the same rows give byte-identical figures (and reports).
            meta = {"Date": None} if fmt == "svg" else {}
            with plt.rc_context({"svg.hashsalt": "lge-synthbench"}), atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
            out[fmt] = path
    finally:
        plt.close(fig)
    return out


def _require(frame: pd.DataFrame | None, columns: Sequence[str], name: str) -> pd.DataFrame:
    if frame is None or len(frame) == 0:
        raise DataError(name, "no rows to plot")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(name, f"missing columns {missing}")
    return frame


def plot_metric_per_arm(
    seg_rows: pd.DataFrame,
    stem: str | Path,
    *,
    metric: str = "dice",
    arms: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Box plots of a per-case metric per arm, with each split's mean joined across arms by a line.

    The lines make the pairing visible: a split whose line rises from ``real`` to an arm gained in that split.

    Args:
        seg_rows: per-case rows with ``split, arm, metric, value``.
        stem: output path without suffix.
        metric: which metric to plot.
        arms: the arm order (default: order of first appearance, baseline ``real`` first when present).

    Returns:
        ``{"png": path, "svg": path}``.

    Raises:
        DataError: when there are no finite rows of ``metric``.
    """
    rows = _require(seg_rows, ("split", "arm", "metric", "value"), "seg_rows")
    rows = rows[(rows["metric"] == metric) & np.isfinite(pd.to_numeric(rows["value"], errors="coerce"))]
    if rows.empty:
        raise DataError("seg_rows", f"no finite '{metric}' values to plot")
    order = list(arms) if arms else sorted(pd.unique(rows["arm"]), key=lambda a: (a != "real", a))
    order = [a for a in order if a in set(rows["arm"])]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(order) + 1.5), 4.0))
    data = [rows.loc[rows["arm"] == a, "value"].astype(float).to_numpy() for a in order]
    ax.boxplot(data, tick_labels=order, showfliers=True, widths=0.5, medianprops={"color": "k"})
    means = rows.assign(split=rows["split"].astype(str)).groupby(["split", "arm"])["value"].mean().unstack("arm")
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for i, (split, line) in enumerate(means.reindex(columns=order).iterrows()):
        ax.plot(
            np.arange(1, len(order) + 1),
            line.to_numpy(dtype=float),
            "o-",
            color=colors[i % 10],
            alpha=0.8,
            lw=1.2,
            ms=4,
            label=f"split {split}",
        )
    ax.set_ylabel(metric.upper() if len(metric) <= 4 else metric)
    ax.set_title(f"{metric} per arm (boxes: cases; lines: split means)")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, stem)


def plot_forest(
    significance: pd.DataFrame, stem: str | Path, *, metric: str = "dice", scale: float = 100.0, unit: str = "points"
) -> dict[str, Path]:
    """Forest plot of each arm's difference to the baseline: one panel per arm, one line per split, then pooled.

    Per split: the mean paired difference with its case-bootstrap CI, filled where the one-split protocol
    (one-sided Wilcoxon, p < 0.05) would claim a gain. Pooled: a diamond at the mean with the corrected t CI,
    coloured by the verdict. The grey band is +-MDE: true effects inside it are likely to go undetected.

    Args:
        significance: :func:`benchmark.analysis.significance.significance_table` output.
        stem: output path without suffix.
        metric: which metric's rows to draw.
        scale: factor from the metric's units to the axis (100: Dice fraction to Dice points).
        unit: the axis unit.

    Returns:
        ``{"png": path, "svg": path}``.

    Raises:
        DataError: when no arm has a per-split difference of ``metric``.
    """
    sig = _require(significance, ("arm", "metric", "scope", "split", "mean_diff"), "significance")
    sig = sig[(sig["metric"] == metric) & np.isfinite(pd.to_numeric(sig["mean_diff"], errors="coerce"))]
    arms = list(pd.unique(sig.loc[sig["scope"] == "split", "arm"]))
    if not arms:
        raise DataError("significance", f"no per-split '{metric}' differences to plot")
    ncol = min(len(arms), 5)
    nrow = -(-len(arms) // ncol)
    width = min(12.6, 3.1 * ncol) / ncol  # inches per panel: the row fills the report's width
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, 2.3 * nrow), sharex=True, squeeze=False)
    several = "baseline" in sig and sig["baseline"].nunique() > 1  # training-data fractions: name each baseline
    for ax, arm in zip(axes.flat, arms, strict=False):
        _forest_panel(ax, sig[sig["arm"] == arm], scale, several)
    for ax in axes.flat[len(arms) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(f"{_LABELS.get(metric, metric)} difference ({unit})", fontsize=8)
    fig.tight_layout(w_pad=0.6, h_pad=0.6)
    return _save(fig, stem, dpi=100)


_VERDICT_COLOURS = {"improves": "#22753f", "worse": "#b83232"}
_LABELS = {"dice": "Dice", "hd95": "HD95"}


def _forest_panel(ax: plt.Axes, rows: pd.DataFrame, scale: float, vs: bool = False) -> None:
    splits = rows[rows["scope"] == "split"]
    pooled = rows[rows["scope"] == "pooled"].iloc[0] if (rows["scope"] == "pooled").any() else None
    y = np.arange(len(splits))[::-1] + 1.0
    mde = float(pooled["mde"]) * scale if pooled is not None and "mde" in rows else float("nan")
    if np.isfinite(mde):
        ax.axvspan(-mde, mde, color="0.88", lw=0)
    ax.axvline(0.0, color="0.3", lw=0.8)
    for yi, r in zip(y, splits.itertuples(), strict=True):
        lo, hi = (float(getattr(r, c, np.nan)) * scale for c in ("ci_low", "ci_high"))
        claim = float(getattr(r, "wilcoxon_p", np.nan)) < 0.05
        ax.plot([lo, hi], [yi, yi], color="0.35", lw=1)
        ax.plot(r.mean_diff * scale, yi, "o", ms=4.5, color="0.2", mfc="0.2" if claim else "white")
    labels = [f"split {s}" for s in splits["split"]]
    if pooled is not None:
        colour = _VERDICT_COLOURS.get(str(pooled.get("verdict", "")), "0.35")
        lo, hi = (float(pooled.get(c, np.nan)) * scale for c in ("t_ci_low", "t_ci_high"))
        ax.plot([lo, hi], [0, 0], color=colour, lw=2)
        ax.plot(float(pooled["mean_diff"]) * scale, 0, "D", ms=7, color=colour)
        labels.append("pooled")
    ax.set_yticks([*y, 0][: len(labels)], labels, fontsize=7.5)
    ax.set_ylim(-0.7, len(splits) + 0.7)
    ax.tick_params(axis="x", labelsize=7.5)
    verdict = "" if pooled is None else f"\n{pooled.get('verdict', '')}"
    against = f" vs {rows['baseline'].iloc[0]}" if vs else ""
    ax.set_title(f"{rows['arm'].iloc[0]}{against}{verdict}", fontsize=8.5)
    ax.grid(axis="x", alpha=0.3)


def plot_quality(
    quality_rows: pd.DataFrame,
    stem: str | Path,
    *,
    metrics: Sequence[str] = ("fid", "kid"),
) -> dict[str, Path]:
    """One panel per metric: each generator's run values (split x seed) with their CIs and the mean.

    Args:
        quality_rows: distribution-level rows with ``generator, metric, value`` and optionally ``ci_low``,
            ``ci_high`` (drawn as error bars) and ``split``/``seed``.
        stem: output path without suffix.
        metrics: the metrics to plot (those absent from the rows are skipped).

    Returns:
        ``{"png": path, "svg": path}``.

    Raises:
        DataError: when none of ``metrics`` has rows.
    """
    rows = _require(quality_rows, ("generator", "metric", "value"), "quality_rows")
    present = [m for m in metrics if (rows["metric"] == m).any()]
    if not present:
        raise DataError("quality_rows", f"no rows for metrics {list(metrics)}")
    gens = sorted(pd.unique(rows["generator"]))
    fig, axes = plt.subplots(
        1,
        len(present),
        figsize=(3.2 + 1.0 * len(gens), 3.6) if len(present) == 1 else (len(present) * (2.2 + 0.9 * len(gens)), 3.6),
        squeeze=False,
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every run
    for ax, metric in zip(axes[0], present, strict=True):
        for i, gen in enumerate(gens):
            g = rows[(rows["metric"] == metric) & (rows["generator"] == gen)]
            v = g["value"].astype(float).to_numpy()
            if v.size == 0:
                continue
            xs = i + rng.uniform(-0.12, 0.12, v.size)
            if {"ci_low", "ci_high"} <= set(g.columns):
                lo, hi = g["ci_low"].astype(float).to_numpy(), g["ci_high"].astype(float).to_numpy()
                err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
                err = np.where(np.isfinite(err), err, 0.0)
                ax.errorbar(xs, v, yerr=err, fmt="o", ms=4, capsize=3, alpha=0.7, color=f"C{i}")
            else:
                ax.plot(xs, v, "o", ms=4, alpha=0.7, color=f"C{i}")
            ax.hlines(np.nanmean(v), i - 0.3, i + 0.3, colors="k", lw=2)
        ax.set_xticks(range(len(gens)), gens, rotation=20)
        ax.set_title(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("image quality per generator (points: runs with CI; bar: mean)", fontsize=9)
    fig.tight_layout()
    return _save(fig, stem)


def plot_montage(
    real: np.ndarray,
    synthetic: Mapping[str, np.ndarray],
    stem: str | Path,
    *,
    label: np.ndarray | None = None,
    slices: Sequence[int] | None = None,
    axis: int = 2,
) -> dict[str, Path]:
    """Real vs each generator's synthetic volume for the same label map, as a grid of slices (``benchmark.viz``).

    Rows: real, then one per generator, each with the label map's contours when given; columns: the chosen
    slices along ``axis``. Every panel shares one grey window (the real volume's 1st-99th percentiles) so that
    brightness differences show.

    Args:
        real: the real volume (X, Y, Z).
        synthetic: ``{generator: volume}``, each the shape of ``real``.
        stem: output path without suffix.
        label: optional label map drawn as contours.
        slices: slice indices (default: 3 evenly spaced through the middle of the volume).
        axis: the slicing axis.

    Returns:
        ``{"png": path, "svg": path}``.

    Raises:
        DataError: when a volume is not 3-D or its shape differs from ``real``.
    """
    from benchmark.viz import montage_figure  # the one montage renderer; it imports the data stack

    real = np.asarray(real)
    vols = [("real", real), *((name, np.asarray(v)) for name, v in synthetic.items())]
    lab = None if label is None else np.asarray(label)
    for name, v in vols + ([] if lab is None else [("label map", lab)]):
        if v.ndim != 3 or v.shape != real.shape:
            raise DataError(name, f"volume shape {v.shape} differs from the real volume's {real.shape} (3-D expected)")
    depth = real.shape[axis]
    idx = list(slices) if slices is not None else [int(round(f * (depth - 1))) for f in (0.3, 0.5, 0.7)]
    lo, hi = (float(q) for q in np.percentile(real, [1, 99]))
    labels = [[lab] * len(idx)] * len(vols)
    fig = montage_figure(
        [(name, [v] * len(idx)) for name, v in vols],
        labels,
        titles=[f"slice {k}" for k in idx],
        axes=[axis] * len(vols),
        panel_inches=1.8,
        slices=idx,
        window=(lo, hi),
    )
    return _save(fig, stem)


def plot_training_curves(curves: pd.DataFrame, stem: str | Path, *, logy: bool = False) -> dict[str, Path]:
    """Training curves: one panel per metric, one line per run.

    Args:
        curves: rows ``run, step, metric, value``.
        stem: output path without suffix.
        logy: log-scale the y axes (useful for losses spanning decades).

    Returns:
        ``{"png": path, "svg": path}``.
    """
    rows = _require(curves, ("run", "step", "metric", "value"), "curves")
    metrics = list(pd.unique(rows["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for run, g in rows[rows["metric"] == metric].groupby("run", sort=True):
            g = g.sort_values("step")
            ax.plot(g["step"].to_numpy(), g["value"].astype(float).to_numpy(), lw=1.2, label=str(run))
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, stem)


def plot_k_selection(scores: pd.DataFrame, stem: str | Path, *, chosen_k: int | None = None) -> dict[str, Path]:
    """Silhouette (higher is better) and Davies-Bouldin (lower is better) of the context clustering vs ``k``.

    Args:
        scores: rows ``k, silhouette, davies_bouldin``.
        stem: output path without suffix.
        chosen_k: the ``k`` the study uses, marked with a vertical line.

    Returns:
        ``{"png": path, "svg": path}``.
    """
    rows = _require(scores, ("k", "silhouette", "davies_bouldin"), "scores").sort_values("k")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(rows["k"], rows["silhouette"], "o-", color="C0", label="silhouette")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("silhouette (higher is better)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(rows["k"], rows["davies_bouldin"], "s--", color="C3", label="Davies-Bouldin")
    ax2.set_ylabel("Davies-Bouldin (lower is better)", color="C3")
    if chosen_k is not None:
        ax.axvline(chosen_k, color="k", ls=":", lw=1)
    ax.set_xticks(rows["k"].to_numpy())
    ax.set_title("context-cluster selection", fontsize=9)
    fig.tight_layout()
    return _save(fig, stem)


def _figure(fn: Any, notes: list[str], title: str, *args: Any, **kwargs: Any) -> Path | None:
    """Draw one figure; a data problem becomes a note instead of stopping the report."""
    try:
        return fn(*args, **kwargs)["png"]
    except DataError as exc:
        notes.append(f"Figure '{title}' not drawn: {exc}")
        return None


def report_figures(
    files: Path,
    seg_rows: pd.DataFrame | None,
    quality_rows: pd.DataFrame | None,
    *,
    curves: pd.DataFrame | None,
    k_scores: pd.DataFrame | None,
    notes: list[str],
) -> dict[str, Path | None]:
    """The figures of the study report, drawn into its files folder.

    Args:
        files: the report's files folder.
        seg_rows: per-case segmentation rows (Dice per arm).
        quality_rows: image-quality rows; the set-level ones (``case_id`` empty) give the FID / KID panel.
        curves: optional training curves.
        k_scores: optional cluster-selection scores.
        notes: receives one line per figure that could not be drawn, saying why.

    Returns:
        ``{title: png path}``, None for a figure not drawn.
    """
    sets = quality_rows
    if quality_rows is not None and "case_id" in quality_rows.columns:
        sets = quality_rows[quality_rows["case_id"].isna()]
    drawn = {
        "Dice per arm (boxes: cases; lines: split means)": _figure(
            plot_metric_per_arm, notes, "Dice per arm", seg_rows, files / "dice_per_arm", metric="dice"
        ),
        "FID / KID per generator with CIs": _figure(plot_quality, notes, "FID / KID", sets, files / "fid_kid"),
    }
    if curves is not None:
        drawn["Training curves"] = _figure(plot_training_curves, notes, "curves", curves, files / "curves")
    if k_scores is not None:
        drawn["Context-cluster selection"] = _figure(plot_k_selection, notes, "k", k_scores, files / "k")
    return drawn
