"""The generator job: train one generator on its scope's training cases, then sample the label maps it serves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.run.kinds.base import JobKind
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
    tags = generator.tags()
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


def run_name(p: dict[str, Any]) -> str:
    """``gen/<scope>/<generator>/seed<seed>``."""
    return f"gen/{p['scope']}/{p['generator']}/seed{p['seed']}"


KIND = JobKind(
    name="generator",
    sections=("data", "preprocess", "composite", "splits", "train"),
    run_name=run_name,
    out_dir=lambda study, p: study.generator_dir(p["generator"], p["scope"], p["seed"]),
    body=run_generator,
    trains=True,
)
