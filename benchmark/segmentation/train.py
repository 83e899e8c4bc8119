"""The body of one segmentation job: train the U-Net on one arm with the engine, evaluate the split's test cases.

Outputs in ``out_dir``: ``checkpoints/`` (the engine's), ``per_case.csv`` (one row per test case and metric,
written by ``benchmark.results``), ``arm.json`` (counts of real/synthetic/augmented volumes, provenance, class
weights, timing) and ``segmenter.pt`` (the trained weights, for ``load_segmenter``), all written atomically so a
killed job never leaves a half-written result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark import results
from benchmark.atomic import write_text_atomic
from benchmark.config import SegmentationConfig, TrainConfig, to_dict
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.arms import ArmData, ArmItem, AuditReport
from benchmark.segmentation.augment import (
    AUGMENT_MAX_SEED,
    augment_pair,
    build_augment,
    check_augment_device,
    patch_for,
)
from benchmark.segmentation.budget import budget_steps
from benchmark.segmentation.evaluate import evaluate_cases, summarize
from benchmark.segmentation.model import TARGET_CLASSES, Segmenter, class_weights, save_segmenter
from benchmark.tracking.tracker import NullTracker, Tracker

Batch = dict[str, torch.Tensor]


def make_batch_fn(items: Sequence[ArmItem], cfg: SegmentationConfig) -> Callable[[int, np.random.Generator], Batch]:
    """A ``batch_fn(step, rng)`` for the engine: ``cfg.batch_size`` items drawn and augmented from ``rng`` only.

    Args:
        items: the arm's training items (all on the same grid).
        cfg: batch size, patch size and augmentations.

    Returns:
        A function returning ``{"image": (B,1,X,Y,Z) float32, "label": (B,1,X,Y,Z) int64}``; with
        ``augment.device: cuda`` the drawn volumes un-augmented plus ``"augment_seed"`` (B,) int64, for the
        segmenter's ``DeviceAugment`` (the same draws from ``rng``, so the same augmentation parameters).
    """
    if not items:
        raise DataError("arm training items", "the arm has no training volumes")
    shapes = {item.image.shape for item in items}
    if len(shapes) != 1:
        raise DataError("arm training items", f"volumes of different shapes {sorted(shapes)}; resample them first")
    (shape,) = shapes
    on_device = cfg.augment.device == "cuda"
    transform = None if on_device else build_augment(cfg.augment, patch_for(cfg, shape))

    def batch_fn(step: int, rng: np.random.Generator) -> Batch:
        images, labels, seeds = [], [], []
        for i in rng.integers(len(items), size=cfg.batch_size):
            item = items[int(i)]
            if on_device:  # the draws augment_pair would make, without the arithmetic
                seeds.append(int(rng.integers(AUGMENT_MAX_SEED)))
                images.append(np.asarray(item.image, np.float32))
                labels.append(np.asarray(item.target, np.int64))
                continue
            image, label = augment_pair(transform, item.image, item.target, rng)
            images.append(image)
            labels.append(label)
        batch = {
            "image": torch.from_numpy(np.stack(images)[:, None]),
            "label": torch.from_numpy(np.stack(labels)[:, None]),
        }
        return batch | {"augment_seed": torch.tensor(seeds, dtype=torch.int64)} if on_device else batch

    return batch_fn


def train_arm(
    arm_data: ArmData,
    test: Mapping[str, tuple],
    seg_cfg: SegmentationConfig,
    train_cfg: TrainConfig,
    *,
    out_dir: str | Path,
    seed: int,
    split: int | str,
    study: str = "",
    arm: str | None = None,
    tracker: Tracker | None = None,
    audit: AuditReport | None = None,
    device: torch.device | None = None,
    expected_spacing: Sequence[float] | None = None,
    spacing_policy: str = "warn",
    resume: bool = True,
    budget_volumes: int | None = None,
) -> pd.DataFrame:
    """Train the segmenter on one arm and evaluate it on the split's held-out test cases.

    Args:
        arm_data: the arm (from ``build_arm``; audit it first with ``audit_arm``).
        test: case id -> ``(image, label, spacing)`` of the split's test cases.
        seg_cfg, train_cfg: the ``segmentation`` and ``train`` sections.
        out_dir: the job folder (checkpoints, ``per_case.csv``, ``arm.json``, ``segmenter.pt``).
        seed: seeds the network's initialisation and, through the engine, every batch.
        split, study: recorded in every row (``study`` empty: rows of no study).
        arm: arm name in the rows (default ``arm_data.arm``).
        tracker: where tags, means and artifacts go (default: nothing).
        audit: the arm's ``AuditReport``; its leaky flag is recorded.
        device: training/inference device (default: the engine's choice).
        expected_spacing, spacing_policy: identity-spacing check of the test cases (see ``check_spacing``).
        resume: continue from the latest checkpoint in ``out_dir/checkpoints``.
        budget_volumes: the volumes ``epochs`` counts under ``segmentation.budget: epochs`` (default: the arm's own;
            ``real@matched``: the largest arm's, see ``benchmark.segmentation.budget``).

    Returns:
        The per-case rows (``benchmark.results.COLUMNS``); none on a rank other than 0 of a multi-rank job, which
        trains with rank 0 and writes nothing.
    """
    if seg_cfg.target != arm_data.target:
        raise ConfigError(f"segmentation.target: {seg_cfg.target!r} but the arm was built for {arm_data.target!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arm, tracker = arm or arm_data.arm, tracker or NullTracker()
    tracker.set_tags(_tags(arm_data, arm, split, seed, audit) | {"budget": seg_cfg.budget})
    n_budget = budget_volumes or len(arm_data.items)
    steps = budget_steps(seg_cfg, n_real=len(arm_data.train_ids), n_volumes=n_budget)
    fitted = fit_segmenter(
        arm_data, seg_cfg, train_cfg, out_dir, seed, tracker, device=device, resume=resume, steps=steps
    )
    if fitted.rank != 0:  # the other ranks of a multi-rank job trained with rank 0; it alone evaluates and writes
        return results.concat([])
    keys = {"study": study, "split": split, "seed": seed, "arm": arm, "generator": arm_data.generator}
    rows, eval_s = _evaluate_arm(fitted.model, test, seg_cfg.target, keys, expected_spacing, spacing_policy)
    record = _arm_record(arm_data, fitted, seg_cfg, keys, audit, summarize(rows), eval_s) | {"budget_volumes": n_budget}
    _write_arm(out_dir, rows, record, tracker, arm_data, fitted.train_seconds)
    return rows


@dataclass
class FittedSegmenter:
    """A trained segmenter and what its training left to record."""

    model: Segmenter
    class_weights: list[float]
    steps: int
    final_losses: dict[str, float]
    train_seconds: float
    weights_file: str
    rank: int = 0
    world_size: int = 1


def fit_segmenter(
    arm_data: ArmData,
    seg_cfg: SegmentationConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    seed: int,
    tracker: Tracker,
    *,
    steps: int,
    device: torch.device | None = None,
    resume: bool = True,
) -> FittedSegmenter:
    """Build the U-Net with the arm's class weights, train it with the engine and save its weights (rank 0).

    Args:
        arm_data: the training set (an arm's, or the real cases of a generator scope).
        seg_cfg, train_cfg: the ``segmentation`` and ``train`` sections.
        out_dir: the job folder (checkpoints, ``segmenter.pt``).
        seed: seeds the initialisation and the batches.
        tracker: receives the losses.
        device, resume: as in ``train_arm``.
        steps: optimizer steps of a one-rank job (``benchmark.segmentation.budget.budget_steps``).
    """
    from benchmark.engine.loop import fit  # the engine pulls in the distributed stack; import it only for training

    weights = class_weights(
        (item.target for item in arm_data.items), TARGET_CLASSES[seg_cfg.target], seg_cfg.class_weighting
    )
    check_augment_device(seg_cfg.augment, device)
    torch.manual_seed(seed)  # the network's initialisation
    model = Segmenter(seg_cfg, weights)
    start = time.perf_counter()
    result = fit(
        model,
        make_batch_fn(arm_data.items, seg_cfg),
        train=train_cfg,
        out_dir=out_dir,
        seed=seed,
        tracker=tracker,
        resume=resume,
        device=device,
        stage_steps={"segmentation": steps},
    )
    train_s = time.perf_counter() - start
    losses = _floats(getattr(result, "final_losses", {}))
    fitted = FittedSegmenter(
        model, [float(w) for w in weights], result.steps, losses, train_s, "", result.rank, result.world_size
    )
    if result.rank == 0:
        fitted.weights_file = save_segmenter(model, out_dir).name
    return fitted


def _evaluate_arm(
    model: Segmenter,
    test: Mapping[str, tuple],
    target: str,
    keys: dict[str, Any],
    expected_spacing: Sequence[float] | None,
    spacing_policy: str,
) -> tuple[pd.DataFrame, float]:
    """Per-case rows of the model's predictions on the test cases, and the seconds it took."""
    start = time.perf_counter()
    predictions = {case_id: model.predict(np.asarray(case[0], np.float32)) for case_id, case in test.items()}
    rows = evaluate_cases(
        predictions, test, target=target, expected_spacing=expected_spacing, spacing_policy=spacing_policy, **keys
    )
    return rows, time.perf_counter() - start


def _arm_record(
    arm_data: ArmData,
    fitted: FittedSegmenter,
    seg_cfg: SegmentationConfig,
    keys: dict[str, Any],
    audit: AuditReport | None,
    means: dict[str, float],
    eval_s: float,
) -> dict[str, Any]:
    """The content of ``arm.json``: counts, provenance, class weights, timing, means and the config section."""
    return {
        **arm_data.summary(),
        "arm": keys["arm"],
        "split": keys["split"],
        "train_seed": keys["seed"],
        "leaky": None if audit is None else audit.leaky,
        "class_weights": fitted.class_weights,
        "budget": seg_cfg.budget,
        "steps": fitted.steps,
        "world_size": fitted.world_size,
        "final_losses": fitted.final_losses,
        "train_seconds": round(fitted.train_seconds, 3),
        "eval_seconds": round(eval_s, 3),
        "weights": fitted.weights_file,
        "means": means,
        "segmentation": to_dict(seg_cfg),
    }


def _write_arm(
    out_dir: Path, rows: pd.DataFrame, record: dict[str, Any], tracker: Tracker, arm_data: ArmData, train_s: float
) -> None:
    """``per_case.csv`` and ``arm.json`` (atomically, both logged as artifacts), the means and counts as metrics."""
    results.write_per_case(rows, out_dir, tracker)
    json_path = write_text_atomic(out_dir / "arm.json", json.dumps(record, indent=1, default=str))
    tracker.log_metrics({k: v for k, v in record["means"].items() if not math.isnan(v)})
    counts = {"n_real": arm_data.n_real, "n_synthetic": arm_data.n_synthetic, "n_augmented": arm_data.n_augmented}
    counts["n_volumes"] = len(arm_data.items)
    tracker.log_metrics({**counts, "train_seconds": train_s, "train_steps": record["steps"]})
    tracker.log_artifact(json_path)


def _tags(arm_data: ArmData, arm: str, split: int | str, seed: int, audit: AuditReport | None) -> dict[str, Any]:
    return {
        "kind": "segmentation",
        "arm": arm,
        "generator": arm_data.generator or "",
        "split": split,
        "seed": seed,
        "ratio": arm_data.ratio,
        "fraction": arm_data.fraction,
        "generator_protocol": arm_data.provenance.get("protocol") or "none",
        "leaky": "unknown" if audit is None else str(audit.leaky).lower(),
    }


def _floats(losses: Any) -> dict[str, float]:
    if not isinstance(losses, Mapping):
        return {}
    return {k: float(v) for k, v in losses.items()}
