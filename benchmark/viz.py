"""Small figures for people to look at: mid-slice montages of volumes with optional label contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data.io import save_png

CONTOUR_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")
AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def _slice_index(volume: np.ndarray, label: np.ndarray | None, axis: int) -> int:
    """The slice through the label's foreground centroid, or the middle slice."""
    if label is not None and np.any(label > 0):
        coords = np.nonzero(label > 0)[axis]
        return int(round(float(coords.mean())))
    return volume.shape[axis] // 2


def _panel(ax, volume: np.ndarray, label: np.ndarray | None, index: int, axis: int, spacing) -> None:
    sl = np.take(np.asarray(volume, dtype=np.float32), index, axis=axis).T
    lo, hi = np.percentile(sl, [0.5, 99.5])
    in_plane = [a for a in range(3) if a != axis]
    aspect = spacing[in_plane[1]] / spacing[in_plane[0]] if spacing is not None else 1.0
    # axial: anterior (low y) at the top; sagittal/coronal: superior (high z) at the top
    origin = "upper" if axis == 2 else "lower"
    ax.imshow(sl, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest", origin=origin, aspect=aspect)
    if label is not None:
        lab = np.take(np.asarray(label), index, axis=axis).T
        values = sorted((int(v) for v in np.unique(lab) if v > 0), reverse=True)  # lower values drawn on top
        for value in values:
            colour = CONTOUR_COLOURS[(value - 1) % len(CONTOUR_COLOURS)]
            ax.contour(lab == value, levels=[0.5], colors=colour, linewidths=0.8)  # data coords match imshow
    ax.set_xticks([])
    ax.set_yticks([])


def save_montage(
    path: str | Path,
    rows: list[tuple[str, list[np.ndarray]]],
    labels: list[list[np.ndarray | None]] | None = None,
    titles: list[str] | None = None,
    axes: list[int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    panel_inches: float = 2.0,
) -> Path:
    """Save a grid of slices, one row per entry of ``rows``.

    Within a column every row slicing the same axis shows the same slice: the one through the centroid of the
    column's first label (if any), else the middle slice.

    Args:
        path: PNG to write (atomically).
        rows: (row title, volumes (X, Y, Z)) per row; rows may have different lengths.
        labels: same nesting as ``rows``; label volumes drawn as contours (one colour per value) or None.
        titles: column titles.
        axes: slicing axis per row (2 axial, 1 coronal, 0 sagittal); default axial for every row.
        spacing: voxel size, for the aspect ratio of non-axial slices.
        panel_inches: size of one panel.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in workers

    n_rows, n_cols = len(rows), max((len(v) for _, v in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("save_montage needs at least one volume")
    labels = labels or [[None] * len(v) for _, v in rows]
    axes = axes or [2] * n_rows
    firsts = []
    for c in range(n_cols):
        first = next((lab[c] for lab in labels if c < len(lab) and lab[c] is not None), None)
        firsts.append((next(v[c] for _, v in rows if c < len(v)), first))
    fig = Figure(figsize=(panel_inches * n_cols, panel_inches * n_rows), dpi=100)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (row_title, vols) in enumerate(rows):
        for c in range(n_cols):
            ax = grid[r][c]
            if c >= len(vols):
                ax.axis("off")
                continue
            lab = labels[r][c] if r < len(labels) and c < len(labels[r]) else None
            _panel(ax, vols[c], lab, _slice_index(*firsts[c], axes[r]), axes[r], spacing)
            if r == 0 and titles is not None and c < len(titles):
                ax.set_title(titles[c], fontsize=8)
        grid[r][0].set_ylabel(f"{row_title} ({AXIS_NAMES.get(axes[r], axes[r])})", fontsize=8)
    fig.tight_layout()
    return save_png(path, fig)
