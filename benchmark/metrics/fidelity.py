"""Mask fidelity: does a synthetic volume show the anatomy of the label map that conditioned it?

A frozen segmenter trained on real volumes only segments each synthetic volume; the Dice of its output against
the conditioning label map, per structure (cavity = 1, wall = 2), is one row per case and structure. Labels
above 2 (composite context clusters) are ignored. A generator with high realism but low mask fidelity does not
produce the anatomy it is asked for, and is of no use for augmenting segmentation training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.metrics import compute_dice

from benchmark.errors import ConfigError, DataError
from benchmark.metrics.context import MetricOutput, SegmentFn
from benchmark.metrics.features import check_volume
from benchmark.metrics.paired import mean_entry

if TYPE_CHECKING:
    from benchmark.metrics.context import EvalContext

STRUCTURES = {"cavity": 1, "wall": 2}


def dice(pred: np.ndarray, ref: np.ndarray, value: int) -> float:
    """Dice of ``pred == value`` against ``ref == value`` (MONAI ``compute_dice``; NaN when ref lacks it)."""
    p = torch.from_numpy(np.asarray(pred) == value)[None, None].float()
    r = torch.from_numpy(np.asarray(ref) == value)[None, None].float()
    return float(compute_dice(p, r, include_background=True, ignore_empty=True)[0, 0])


def mask_fidelity(
    synthetic: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    segment_fn: SegmentFn,
    structures: Sequence[str] = ("cavity", "wall"),
) -> list[dict]:
    """Dice of the segmenter's output on each synthetic volume against its conditioning label map.

    Args:
        synthetic: case id -> synthetic (X, Y, Z) volume.
        labels: case id -> the label map that conditioned it (0 background, 1 cavity, 2 wall, 3.. context).
        segment_fn: volume -> integer label map of the same shape (a frozen real-only segmenter).
        structures: which of ``cavity``, ``wall`` to score.

    Returns:
        Rows ``{"case_id", "metric": "dice_<structure>", "value"}``, sorted by case id.
    """
    unknown = [s for s in structures if s not in STRUCTURES]
    if unknown:
        raise ConfigError(f"metrics.fidelity_classes: unknown {unknown}; choices: {', '.join(STRUCTURES)}")
    missing = sorted(set(synthetic) - set(labels))
    if missing:
        raise DataError("label maps", f"no conditioning label map for synthetic case(s): {', '.join(missing[:5])}")
    rows = []
    for cid in sorted(synthetic):
        vol = check_volume(synthetic[cid], cid)
        ref = np.asarray(labels[cid])
        pred = np.asarray(segment_fn(vol))
        if ref.shape != vol.shape or pred.shape != vol.shape:
            raise DataError(
                f"case {cid}", f"shapes differ: volume {vol.shape}, label map {ref.shape}, segmentation {pred.shape}"
            )
        rows += [{"case_id": cid, "metric": f"dice_{s}", "value": dice(pred, ref, STRUCTURES[s])} for s in structures]
    return rows


def mask_fidelity_metric(ctx: EvalContext) -> MetricOutput:
    """Per-case Dice rows and the mean Dice per structure (``dice_<structure>_mean``)."""
    if ctx.segment_fn is None:
        raise ConfigError("metrics.metrics: mask_fidelity needs a segmenter (segment_fn); remove it or supply one")
    rows = mask_fidelity(ctx.synthetic, ctx.labels, ctx.segment_fn, ctx.cfg.fidelity_classes)
    summary = {}
    for s in ctx.cfg.fidelity_classes:
        vals = [r["value"] for r in rows if r["metric"] == f"dice_{s}" and np.isfinite(r["value"])]
        if vals:
            summary[f"dice_{s}_mean"] = mean_entry(vals, n_boot=ctx.cfg.bootstrap, rng=ctx.rng(f"dice_{s}"))
    return MetricOutput(rows=rows, summary=summary)
