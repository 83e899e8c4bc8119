"""Small figures for people to look at: the one montage renderer (slices of volumes with optional label contours).

The phantom's montage, the generator job's real-vs-synthetic montage and the analysis montage are all drawn here.
"""

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


def _panel(ax, volume: np.ndarray, label: np.ndarray | None, index: int, axis: int, spacing, window=None) -> None:
    sl = np.take(np.asarray(volume, dtype=np.float32), index, axis=axis).T
    lo, hi = np.percentile(sl, [0.5, 99.5]) if window is None else window
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


Rows = list[tuple[str, list[np.ndarray | None]]]


def montage_figure(
    rows: Rows,
    labels: list[list[np.ndarray | None]] | None = None,
    titles: list[str] | None = None,
    axes: list[int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    panel_inches: float = 2.0,
    slices: list[int] | None = None,
    window: tuple[float, float] | None = None,
):
    """A grid of slices, one row per entry of ``rows`` (a matplotlib ``Figure``, not attached to pyplot).

    Within a column every row slicing the same axis shows the same slice: ``slices[column]`` when given, else the
    one through the centroid of the column's first label (if any), else the middle slice.

    Args:
        rows: (row title, volumes (X, Y, Z)) per row; rows may have different lengths, and a None volume leaves
            its panel empty.
        labels: same nesting as ``rows``; label volumes drawn as contours (one colour per value) or None.
        titles: column titles.
        axes: slicing axis per row (2 axial, 1 coronal, 0 sagittal); default axial for every row.
        spacing: voxel size, for the aspect ratio of non-axial slices.
        panel_inches: size of one panel.
        slices: slice index per column (default: see above).
        window: grey window (low, high) shared by every panel (default: each panel's 0.5-99.5th percentiles).

    Returns:
        The figure.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in workers

    n_rows, n_cols = len(rows), max((len(v) for _, v in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("a montage needs at least one volume")
    labels = labels or [[None] * len(v) for _, v in rows]
    axes = axes or [2] * n_rows
    firsts = []
    for c in range(n_cols):
        first = next((lab[c] for lab in labels if c < len(lab) and lab[c] is not None), None)
        firsts.append((next((v[c] for _, v in rows if c < len(v) and v[c] is not None), None), first))
    fig = Figure(figsize=(panel_inches * n_cols, panel_inches * n_rows), dpi=100)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (row_title, vols) in enumerate(rows):
        for c in range(n_cols):
            ax = grid[r][c]
            if c >= len(vols) or vols[c] is None:
                ax.axis("off")
                continue
            lab = labels[r][c] if r < len(labels) and c < len(labels[r]) else None
            index = slices[c] if slices is not None else _slice_index(*firsts[c], axes[r])
            _panel(ax, vols[c], lab, index, axes[r], spacing, window)
            if r == 0 and titles is not None and c < len(titles):
                ax.set_title(titles[c], fontsize=8)
        grid[r][0].set_ylabel(f"{row_title} ({AXIS_NAMES.get(axes[r], axes[r])})", fontsize=8)
    fig.tight_layout()
    return fig


def save_montage(
    path: str | Path,
    rows: Rows,
    labels: list[list[np.ndarray | None]] | None = None,
    titles: list[str] | None = None,
    axes: list[int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    panel_inches: float = 2.0,
    slices: list[int] | None = None,
    window: tuple[float, float] | None = None,
) -> Path:
    """Save the grid of :func:`montage_figure` as a PNG (atomically).

    Args:
        path: PNG to write.
        rows, labels, titles, axes, spacing, panel_inches, slices, window: as for :func:`montage_figure`.

    Returns:
        The path written.
    """
    fig = montage_figure(rows, labels, titles, axes, spacing, panel_inches, slices, window)
    return save_png(path, fig)
