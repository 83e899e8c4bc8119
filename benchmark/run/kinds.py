"""Stage bodies of a sweep's jobs: generator, segmentation, quality; and the end-of-sweep summary.

Each body takes the ``Study``, its parameters, its output folder and a tracker, and returns a small JSON-safe
summary. They hold the study wiring only; the work is done by ``benchmark.generators.train``,
``benchmark.segmentation`` and ``benchmark.metrics``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.atomic import write_text_atomic
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker


def run_generator(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Train one generator on its scope's training cases, then sample every split's training label maps."""
    from benchmark.generators.train import sample_to_disk, train_generator

    cfg, gen, scope, seed = study.cfg, p["generator"], p["scope"], int(p["seed"])
    _, maps = study.composite(scope)
    split = int(scope.removeprefix("split")) if scope.startswith("split") else None
    train_ids = list(study.plan.generator_train_cases(split))
    arrays = study.arrays
    generator, fit = train_generator(
        gen,
        cfg.generators[gen],
        [arrays[c].image for c in train_ids],
        [maps[c] for c in train_ids],
        num_classes=cfg.composite.num_classes,
        train=cfg.train,
        out_dir=out,
        seed=seed,
        tracker=tracker,
    )
    tags = generator.tags() if hasattr(generator, "tags") else {}
    tracker.set_tags(tags)  # e.g. perceptual=off when no MedicalNet weights were given
    served = study.scope_splits(scope)
    ids = sorted(set().union(*(study.plan.splits[k].train_cases for k in served)))
    every = out / "samples_all"  # each label map is sampled once, whichever splits it serves
    sample_to_disk(
        generator,
        {c: maps[c] for c in ids},
        {c: arrays[c].affine for c in ids},
        every,
        seed,
        reals={c: arrays[c].image for c in ids},
        name=gen,
        num_classes=cfg.composite.num_classes,
    )
    for k in served:
        folder = study.samples_dir(gen, k, seed)
        _link_samples(every, folder, study.plan.splits[k].train_cases)
        _annotate_samples(folder, study, scope, k, train_ids)
    if (every / "montage.png").is_file():
        tracker.log_artifact(every / "montage.png", "montage")
    return {
        "generator": gen,
        "scope": scope,
        "n_train": len(train_ids),
        **tags,
        "final_losses": {k: float(v) for k, v in (fit.final_losses or {}).items()},
    }


def _link_samples(every: Path, folder: Path, case_ids: tuple[str, ...]) -> None:
    """A split's sample folder: hard links to its training cases' volumes and a ``samples.json`` listing them."""
    d = json.loads((every / "samples.json").read_text())
    keep = [s for s in d["samples"] if s["case_id"] in set(case_ids)]
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    for s in keep:
        src, dst = every / s["path"], folder / s["path"]
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system: copy instead
            shutil.copy2(src, dst)
    if (every / "montage.png").is_file():
        shutil.copy2(every / "montage.png", folder / "montage.png")
    write_text_atomic(folder / "samples.json", json.dumps({**d, "samples": keep}, indent=1))


def _annotate_samples(folder: Path, study: Study, scope: str, split: int, train_ids: list[str]) -> None:
    """Record protocol, scope and the generator's training cases in ``samples.json`` (the leakage audit reads it)."""
    path = folder / "samples.json"
    d = json.loads(path.read_text())
    d.update(protocol=study.plan.protocol, scope=scope, split=split, train_case_ids=sorted(train_ids))
    write_text_atomic(path, json.dumps(d, indent=1))


def _arm_folder_name(p: dict[str, Any]) -> str:
    from benchmark.run.job import run_name

    return run_name("segmentation", p).rsplit("/", 1)[1]


def run_segmentation(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Train and evaluate one arm of one split; per-case rows go to ``per_case.csv`` and the tracker."""
    from benchmark.segmentation.arms import audit_arm, build_arm, load_synth_index, parse_arm
    from benchmark.segmentation.train import train_arm

    cfg, split, seed, arm, ratio = study.cfg, int(p["split"]), int(p["seed"]), p["arm"], float(p["ratio"])
    s = study.plan.splits[split]
    arrays = study.arrays
    _, gen = parse_arm(arm)
    synth = {}
    if gen:
        synth[gen] = load_synth_index(study.samples_dir(gen, split, seed), generator=gen, split=split, seed=seed)
    real = {c: (arrays[c].image, arrays[c].label) for c in s.train_cases}
    data = build_arm(
        arm,
        s.train_cases,
        s.test_cases,
        real,
        synth,
        ratio,
        seed,
        target=cfg.segmentation.target,
        augment=cfg.segmentation.augment,
    )
    audit = audit_arm(data, s)
    test = {c: (arrays[c].image, arrays[c].label, study.spacing(c)) for c in s.test_cases}
    rows = train_arm(
        data,
        test,
        cfg.segmentation,
        cfg.train,
        out_dir=out,
        seed=seed,
        split=split,
        arm=_arm_folder_name(p),
        tracker=tracker,
        audit=audit,
        expected_spacing=cfg.data.expected_spacing,
    )
    dice = rows[rows.metric == "dice"].value
    return {
        "arm": arm,
        "n_real": data.n_real,
        "n_synthetic": data.n_synthetic,
        "n_augmented": data.n_augmented,
        "mean_dice": float(dice.mean()) if len(dice) else float("nan"),
    }


def run_quality(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Image quality of one generator's volumes for one split (paired with the real cases they came from)."""
    from benchmark.metrics.evaluate import evaluate_generator, load_nifti_dir
    from benchmark.segmentation.model import load_segmenter

    cfg, gen, split, seed = study.cfg, p["generator"], int(p["split"]), int(p["seed"])
    arrays = study.arrays
    scope = study.scope(split)
    _, maps = study.composite(scope)
    synthetic = load_nifti_dir(study.samples_dir(gen, split, seed) / "samples")
    ids = sorted(synthetic)
    train_ids = study.plan.generator_train_cases(split if scope.startswith("split") else None)
    seg = load_segmenter(study.seg_dir(split, seed, "real"), cfg.segmentation)
    metrics_cfg = cfg.metrics
    if cfg.segmentation.target == "cavity":  # a cavity-only segmenter says nothing about the wall
        classes = tuple(c for c in metrics_cfg.fidelity_classes if c != "wall")
        metrics_cfg = dataclasses.replace(metrics_cfg, fidelity_classes=classes)
    frame, summary = evaluate_generator(
        {c: arrays[c].image for c in ids},
        synthetic,
        {c: maps[c] for c in ids},
        {c: arrays[c].image for c in train_ids},
        metrics_cfg,
        cache_dir=study.root / "cache" / "features",
        segment_fn=seg.predict,
        out_dir=out,
    )
    metrics = {f"{name}": float(v["value"]) for name, v in summary.items() if _finite(v.get("value"))}
    tracker.log_metrics(metrics)
    backbones = sorted({str(v.get("backbone")) for v in summary.values() if v.get("backbone")})
    tracker.set_tags({"backbone": ",".join(backbones)})
    for name in ("per_case.csv", "summary.json"):
        if (out / name).is_file():
            tracker.log_artifact(out / name)
    return {"generator": gen, "split": split, "metrics": metrics, "backbone": ",".join(backbones)}


def _finite(v: Any) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


STAGES = {"generator": run_generator, "segmentation": run_segmentation, "quality": run_quality}


def summarise_study(study: Study, outcomes: dict) -> Path | None:
    """Collect per-case rows and summaries from the study folder, print a short table, write the report."""
    from benchmark.analysis.collect import collect_study, print_summary, write_study_report

    frames = collect_study(study)
    print_summary(frames)
    return write_study_report(study, frames, outcomes)
