"""The generator job: train one generator on its scope's training cases, then sample the label maps it serves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.config import StudyConfig
from benchmark.run.kinds.base import JobKind
from benchmark.run.kinds.scope_segmenter import job_params as segmenter_params
from benchmark.run.kinds.scope_segmenter import load_for_generator, needs_segmenter
from benchmark.run.kinds.scope_segmenter import run_name as segmenter_run_name
from benchmark.segmentation.fractions import split_suffix
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker


def run_generator(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Train one generator on its scope's training cases, then sample every split's training label maps.

    Every rank of a multi-rank job trains; only rank 0 samples and writes (the others return after training). A
    generator whose config ``needs_segmenter()`` trains against its scope's frozen real-only segmenter
    (``scope_segmenter``), which the sweep trains first.
    """
    from benchmark.generators import check_copies, split_generator_name
    from benchmark.generators.export import ARTIFACT_DIR, save_generator
    from benchmark.generators.train import sample_to_disk, train_generator

    cfg, gen, scope, seed = study.cfg, p["generator"], p["scope"], int(p["seed"])
    base = split_generator_name(gen)[0].name  # spade_ldm@cavity_only: spade_ldm's settings on its own label maps
    copies = int(p.get("copies", 1))
    check_copies(gen, cfg.generators[base], copies)  # before training: a deterministic generator cannot give them
    num_classes, maps = study.label_maps(scope, gen)
    train_ids = list(study.scope_train_cases(scope, seed))  # a fraction scope: the fraction's patients only
    segmenter = None
    if needs_segmenter(cfg, gen):  # before anything trains: a missing segmenter names the job that makes it
        segmenter = load_for_generator(study, run_name(p), scope, seed, tuple(train_ids))
    arrays = study.arrays
    generator, fit = train_generator(
        base,
        cfg.generators[base],
        [arrays[c].image for c in train_ids],
        [maps[c] for c in train_ids],
        num_classes=num_classes,
        train=cfg.train,
        out_dir=out,
        seed=seed,
        tracker=tracker,
        segmenter=segmenter,
    )
    ranks = {"world_size": fit.world_size, "steps_per_rank": fit.steps_per_rank}
    if fit.rank != 0:  # the other ranks trained with rank 0; it alone samples and writes
        return {"generator": gen, "scope": scope, "rank": fit.rank, **ranks}
    tags = generator.tags()
    tracker.set_tags(tags)  # e.g. perceptual=off when no MedicalNet weights were given
    served = study.scope_splits(scope)
    fraction = split_suffix(scope)[1]
    cases = {k: study.plan.splits[k].train_cases if fraction == 1.0 else tuple(train_ids) for k in served}
    ids = sorted(set().union(*cases.values()))
    every = out / "samples_all"  # each label map is sampled once (or `copies` times), whichever splits it serves
    sample_to_disk(
        generator,
        {c: maps[c] for c in ids},
        {c: arrays[c].affine for c in ids},
        every,
        seed,
        reals={c: arrays[c].image for c in ids},
        name=gen,
        num_classes=num_classes,
        copies=copies,
    )
    for k in served:
        folder = study.samples_dir(gen, k, seed, fraction)
        _link_samples(every, folder, cases[k])
        _annotate_samples(folder, study, scope, k, train_ids)
    if (every / "montage.png").is_file():
        tracker.log_artifact(every / "montage.png", "montage")
    shape = tuple(maps[train_ids[0]].shape)  # the trained generator and its settings, to sample new label maps later
    for path in save_generator(generator, base, num_classes, shape, out / ARTIFACT_DIR):
        tracker.log_artifact(path, ARTIFACT_DIR)
    return {
        "generator": gen,
        "scope": scope,
        "n_train": len(train_ids),
        **({"segmenter": segmenter_run_name({"scope": scope, "seed": seed})} if segmenter is not None else {}),
        **tags,
        **ranks,
        "final_losses": {k: float(v) for k, v in (fit.final_losses or {}).items()},
    }


def _link_samples(every: Path, folder: Path, case_ids: tuple[str, ...]) -> None:
    """A split's sample folder: hard links to its training cases' volumes and a ``samples.json`` listing them."""
    d = json.loads((every / "samples.json").read_text())
    keep = [s for s in d["samples"] if s["case_id"] in set(case_ids)]
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    for s in keep:
        src, dst = every / s["path"], folder / s["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)  # samples/copy<k>/ for the extra volumes of a ratio above 1
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


def job_params(cfg: StudyConfig, gen: str, scope: str, seed: int) -> dict[str, Any]:
    """A generator job's parameters: generator, scope, seed, ``copies`` (volumes per label map) when the study's
    ``segmentation.ratios`` need more than one, and the scope segmenter's job key and settings hash when the generator
    trains against one, so that a job's hash changes only then.

    Args:
        cfg: the ``StudyConfig``.
        gen: the study's generator name.
        scope: the training scope (``pool``, ``split<k>``, ``split<k>@f<f>`` (a fraction, per_split), ``all``).
        seed: the job's seed.
    """
    from benchmark.segmentation.arms import sample_copies

    copies = sample_copies(cfg.segmentation.ratios)
    p = {"generator": gen, "scope": scope, "seed": seed} | ({"copies": copies} if copies > 1 else {})
    if needs_segmenter(cfg, gen):  # the segmenter job it depends on, and that job's settings
        seg = segmenter_params(cfg, scope, seed)
        p |= {"segmenter": segmenter_run_name(seg), "segmenter_config": seg["segmenter_config"]}
    return p


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
