"""The image-quality job: every selected metric of one generator's volumes for one split and seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.run.kinds.base import JobKind
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker


def run_quality(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Image quality of one generator's volumes for one split (paired with the real cases they came from).

    Per-case rows go to ``per_case.csv`` and set-level metrics (FID, KID, MMD with CIs) to ``summary.json``, both
    through ``benchmark.results`` and both carrying the job's study, split, seed and generator.
    """
    from benchmark import results
    from benchmark.metrics.evaluate import evaluate_generator, load_nifti_dir
    from benchmark.segmentation.model import load_segmenter

    cfg, gen, split, seed = study.cfg, p["generator"], int(p["split"]), int(p["seed"])
    arrays = study.arrays
    scope = study.scope(split)
    _, maps = study.label_maps(scope, gen)  # the maps that conditioned this generator's volumes
    synthetic = load_nifti_dir(study.samples_dir(gen, split, seed) / "samples")
    ids = sorted(synthetic)
    train_ids = study.plan.generator_train_cases(split if scope.startswith("split") else None)
    seg = load_segmenter(study.seg_dir(split, seed, "real"), cfg.segmentation)
    metrics_cfg = cfg.metrics
    if cfg.segmentation.target == "cavity":  # a cavity-only segmenter says nothing about the wall
        classes = tuple(c for c in metrics_cfg.fidelity_classes if c != "wall")
        metrics_cfg = dataclasses.replace(metrics_cfg, fidelity_classes=classes)
    job = {"study": cfg.name, "split": split, "seed": seed, "generator": gen}
    frame, summary = evaluate_generator(
        {c: arrays[c].image for c in ids},
        synthetic,
        {c: maps[c] for c in ids},
        {c: arrays[c].image for c in train_ids},
        metrics_cfg,
        cache_dir=study.root / "cache" / "features",
        segment_fn=seg.predict,
        job=job,
    )
    results.write_per_case(frame, out, tracker)
    results.write_summary(summary, out, job, tracker)
    metrics = {f"{name}": float(v["value"]) for name, v in summary.items() if _finite(v.get("value"))}
    tracker.log_metrics(metrics)
    backbones = sorted({str(v.get("backbone")) for v in summary.values() if v.get("backbone")})
    tracker.set_tags({"backbone": ",".join(backbones)})
    return {"generator": gen, "split": split, "metrics": metrics, "backbone": ",".join(backbones)}


def _finite(v: Any) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def run_name(p: dict[str, Any]) -> str:
    """``quality/split<split>/<generator>/seed<seed>``."""
    return f"quality/split{p['split']}/{p['generator']}/seed{p['seed']}"


KIND = JobKind(
    name="quality",
    sections=("data", "preprocess", "composite", "splits", "train", "segmentation", "metrics"),
    run_name=run_name,
    out_dir=lambda study, p: study.quality_dir(p["generator"], p["split"], p["seed"]),
    body=run_quality,
    tags=lambda study: {"backbone_requested": study.cfg.metrics.backbone},
)
