"""The image-quality job: every selected metric for one generator run, as per-case rows and a summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark import results
from benchmark.atomic import is_temp
from benchmark.config import MetricsConfig
from benchmark.data.io import load_volume
from benchmark.errors import ConfigError, DataError
from benchmark.metrics import METRICS
from benchmark.metrics.context import EvalContext, SegmentFn

METRIC_FIELDS = ["case_id", "metric", "value", "backbone"]  # what a metric's rows hold; the job adds the rest
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def evaluate_generator(
    real: dict[str, np.ndarray],
    synthetic: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    train_real: dict[str, np.ndarray],
    cfg: MetricsConfig,
    *,
    cache_dir: str | Path | None,
    segment_fn: SegmentFn | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    job: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Compute the metrics named in ``cfg.metrics``.

    Args:
        real: case id -> real volume; ``synthetic[id]`` is paired with ``real[id]`` (PSNR, MS-SSIM), and the whole
            set is the real distribution for FID/KID/MMD.
        synthetic: case id -> synthetic volume.
        labels: case id -> the label map that conditioned ``synthetic[id]`` (mask fidelity).
        train_real: case id -> real training volume of the generator (memorisation).
        cfg: the metrics section.
        cache_dir: feature cache folder (None: no cache).
        segment_fn: frozen real-only segmenter, volume -> label map; required by ``mask_fidelity``.
        out_dir: when given, ``per_case.csv`` and ``summary.json`` are written there (``benchmark.results``).
        device: where the feature network runs.
        job: ``study``, ``split``, ``seed`` and ``generator`` recorded in every row and in the summary
            (default: all empty, for volumes of no study).

    Returns:
        Per-case rows (``benchmark.results.COLUMNS``; ``arm`` and ``reason`` empty) and the summary: metric
        name -> {value, ci_low, ci_high, n, backbone, ...}.
    """
    unknown = [m for m in cfg.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"metrics.metrics: unknown {unknown}; choices: {', '.join(METRICS)}")
    if not synthetic:
        raise DataError("synthetic volumes", "no synthetic volumes to evaluate")
    ctx = EvalContext(
        real=real,
        synthetic=synthetic,
        labels=labels,
        train_real=train_real,
        cfg=cfg,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        segment_fn=segment_fn,
        device=device,
    )
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for name in cfg.metrics:
        out = METRICS[name](ctx)
        rows += out.rows
        summary.update(out.summary)
    job = {"study": "", "split": "", "seed": "", "generator": "", **(job or {})}
    frame = results.conform(pd.DataFrame(rows, columns=METRIC_FIELDS).assign(**job, arm="", reason=""))
    if out_dir is not None:
        results.write_per_case(frame, out_dir)
        results.write_summary(summary, out_dir, job)
    return frame, summary


def case_id_of(path: Path) -> str:
    """File name without its NIfTI suffix."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def load_nifti_dir(folder: str | Path, *, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """All ``*.nii.gz`` / ``*.nii`` files of a folder as case id (file name without suffix) -> 3D array.

    Args:
        folder: the folder.
        dtype: array dtype (float32 for images; pass np.int64 for label maps).

    Returns:
        The volumes by case id. ``load_volume`` checks each file (3D, finite, geometry) and names it on error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and not is_temp(p))
    if not files:
        raise DataError(folder, "holds no .nii/.nii.gz files")
    return {case_id_of(path): load_volume(path).array.astype(dtype) for path in files}
