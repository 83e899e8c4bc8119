"""Per-case evaluation of a segmenter: Dice, HD95 (mm) and symmetric ASSD (mm), with MONAI metrics.

Rows follow the one per-case schema (``benchmark.results.COLUMNS``), ``backbone`` empty. Metric names are ``dice``,
``hd95`` and ``assd`` for the LA cavity (the paper's task) and ``dice_wall``, ``hd95_wall``, ``assd_wall`` for
the wall when the target is ``cavity_wall``. Surface distances are undefined when the ground truth or the
prediction is empty: they are recorded as NaN with the reason, never as 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from benchmark.errors import DataError
from benchmark.results import COLUMNS
from benchmark.segmentation.model import TARGET_CLASSES, make_target

STRUCTURES = {1: "", 2: "_wall"}  # class index -> metric-name suffix
IDENTITY = (1.0, 1.0, 1.0)


def check_spacing(
    spacing: Sequence[float],
    expected_spacing: Sequence[float] | None,
    where: str,
    policy: str = "warn",
) -> str:
    """Detect identity spacing on a dataset whose voxels are known to be another size.

    Args:
        spacing: the case's voxel size (mm).
        expected_spacing: the dataset's known voxel size, or None when unknown.
        where: the case id (for the message).
        policy: ``"warn"`` (warn and return a reason for the distance rows) or ``"refuse"`` (raise DataError).

    Returns:
        ``""`` when the spacing is plausible, else a reason string for HD95/ASSD rows.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise DataError(where, f"invalid voxel spacing {spacing}")
    if expected_spacing is None or spacing != IDENTITY:
        return ""
    expected = tuple(float(s) for s in expected_spacing)
    if np.allclose(expected, IDENTITY):
        return ""
    msg = (
        f"identity spacing (1, 1, 1) on a dataset with {expected} mm voxels: distances would be in voxels; "
        "set data.spacing_override"
    )
    if policy == "refuse":
        raise DataError(where, msg)
    warnings.warn(f"{where}: {msg}", stacklevel=2)
    return "identity spacing: distances in voxels"


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], num_classes: int
) -> list[tuple[str, float, str]]:
    """Metrics of one case.

    Args:
        pred: (X, Y, Z) predicted labels 0..num_classes-1.
        gt: (X, Y, Z) ground-truth target labels on the same grid.
        spacing: voxel size (mm) used for the surface distances.
        num_classes: 2 (cavity) or 3 (cavity and wall).

    Returns:
        ``(metric, value, reason)`` per foreground class: Dice, HD95 and ASSD (mm).
    """
    if pred.shape != gt.shape:
        raise DataError("prediction", f"shape {pred.shape} differs from the ground truth {gt.shape}")
    rows = []
    for cls, suffix in STRUCTURES.items():
        if cls >= num_classes:
            break
        p = torch.as_tensor(np.asarray(pred) == cls)[None, None]
        g = torch.as_tensor(np.asarray(gt) == cls)[None, None]
        rows += _structure_metrics(p, g, tuple(float(s) for s in spacing), suffix)
    return rows


def _structure_metrics(p: torch.Tensor, g: torch.Tensor, spacing: tuple, suffix: str) -> list[tuple[str, float, str]]:
    """Dice/HD95/ASSD of one binary structure, (1,1,X,Y,Z) boolean tensors."""
    empty_gt, empty_pred = not bool(g.any()), not bool(p.any())
    nan = float("nan")
    if empty_gt:
        why = "empty ground truth"
        return [(f"dice{suffix}", nan, why), (f"hd95{suffix}", nan, why), (f"assd{suffix}", nan, why)]
    # two-channel one-hot so MONAI's include_background=False keeps just the structure
    pred1h = torch.cat([~p, p], 1).float()
    gt1h = torch.cat([~g, g], 1).float()
    dice = float(compute_dice(pred1h, gt1h, include_background=False)[0, 0])
    if empty_pred:
        why = "empty prediction"
        return [(f"dice{suffix}", dice, ""), (f"hd95{suffix}", nan, why), (f"assd{suffix}", nan, why)]
    with warnings.catch_warnings():
        # MONAI 1.6 warns about its own deprecated internal argument on every call
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(pred1h, gt1h, include_background=False, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(pred1h, gt1h, include_background=False, symmetric=True, spacing=spacing)
    return [
        (f"dice{suffix}", dice, ""),
        (f"hd95{suffix}", float(hd[0, 0]), ""),
        (f"assd{suffix}", float(assd[0, 0]), ""),
    ]


def evaluate_cases(
    predictions: Mapping[str, np.ndarray],
    test: Mapping[str, tuple],
    *,
    target: str = "cavity",
    study: str = "",
    split: int | str = 0,
    seed: int = 0,
    arm: str = "",
    generator: str | None = None,
    expected_spacing: Sequence[float] | None = None,
    spacing_policy: str = "warn",
) -> pd.DataFrame:
    """Per-case rows for a set of predictions.

    Args:
        predictions: case id -> (X, Y, Z) predicted labels.
        test: case id -> ``(image, label, spacing)``; the label is the expert map (0/1/2), turned into ``target``.
        target: ``"cavity"`` or ``"cavity_wall"``.
        study, split, seed, arm, generator: recorded in every row (``study`` empty: rows of no study).
        expected_spacing: the dataset's known voxel size; identity spacing on such a dataset is warned about
            (reason recorded on the distance rows) or refused, following ``spacing_policy``.
        spacing_policy: ``"warn"`` or ``"refuse"``.

    Returns:
        A DataFrame with ``benchmark.results.COLUMNS``, one row per case and metric, in case-id order.
    """
    num_classes = TARGET_CLASSES[target]
    missing = sorted(set(test) - set(predictions))
    if missing:
        raise DataError("predictions", f"no prediction for test cases {missing[:5]}")
    rows = []
    for case_id in sorted(test):
        _, label, spacing = test[case_id][:3]
        note = check_spacing(spacing, expected_spacing, case_id, spacing_policy)
        gt = make_target(label, target)
        for metric, value, reason in case_metrics(np.asarray(predictions[case_id]), gt, spacing, num_classes):
            if note and not metric.startswith("dice") and not math.isnan(value):
                reason = note
            rows.append([study, split, seed, generator or "", arm, case_id, metric, value, reason, ""])
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(rows: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric over the cases where it is defined (NaN rows are left out, and counted)."""
    out: dict[str, float] = {}
    for metric, grp in rows.groupby("metric", sort=True):
        values = grp["value"].astype(float)
        out[f"mean_{metric}"] = float(values.mean()) if values.notna().any() else float("nan")
        out[f"n_undefined_{metric}"] = float(values.isna().sum())
    return out
