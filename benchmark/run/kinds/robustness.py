"""The robustness job: one trained segmenter (arm x split x seed) on one family of shifted test sets.

It loads the ``segmenter.pt`` its segmentation job left, evaluates it on the family's shifted test sets at every
severity (``benchmark.robustness.shifts``) and writes per-case Dice / HD95 / ASSD rows with ``shift`` and
``severity`` to ``robustness.csv`` (``benchmark.results.write_shifted``); the segmentation job's own
``per_case.csv`` stays as it was. What a job depends on beyond its segmenter (family, severities, corruption seed,
external set) is in its parameters, so adding a family to a study leaves the finished jobs of the others done.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from benchmark.config import StudyConfig, build_section, to_dict
from benchmark.errors import ConfigError
from benchmark.run.kinds.base import JobKind
from benchmark.run.kinds.segmentation import arm_folder
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker

Graph = list[tuple[str, str, dict, tuple]]


def run_name(p: dict[str, Any]) -> str:
    """``robust/split<split>/seed<seed>/<arm folder>/<shift>``."""
    return f"robust/split{p['split']}/seed{p['seed']}/{arm_folder(p)}/{p['shift']}"


def shift_params(cfg: StudyConfig, seg_params: dict[str, Any], family: str) -> dict[str, Any]:
    """A robustness job's parameters: its segmentation job's, plus what its shifted test sets depend on.

    Args:
        cfg: the study config (``robustness`` section).
        seg_params: the segmentation job's parameters (split, seed, arm, ratio).
        family: the shift family.
    """
    from benchmark.robustness.shifts import CORRUPTIONS, EXTERNAL, shift_severities

    p = {**seg_params, "shift": family, "severities": list(shift_severities(cfg, family))}
    if family in CORRUPTIONS:
        p["corruption_seed"] = cfg.robustness.seed
    if family == EXTERNAL:
        p["external"] = {"path": cfg.robustness.external.path, "kind": cfg.robustness.external.kind}
    return p


def robustness_jobs(cfg: StudyConfig, graph: Graph) -> Graph:
    """One robustness job per segmentation job of ``graph`` and shift family, depending on that job; only the
    full-data segmentation jobs (no ``fraction`` parameter) unless ``robustness.all_fractions``.

    Args:
        cfg: the study config; nothing is added unless ``robustness.enabled``.
        graph: the study's jobs ``(key, kind, params, deps)``.

    Returns:
        The robustness jobs to add.
    """
    if not cfg.robustness.enabled:
        return []
    from benchmark.robustness.shifts import EXTERNAL, check_families, list_external

    check_families(cfg)
    if EXTERNAL in cfg.robustness.families:
        list_external(cfg)  # a wrong folder or layout fails here, from file names alone, before any job runs
    jobs = []
    for family in cfg.robustness.families:
        for key, kind, params, _ in graph:
            full = params.get("fraction", 1.0) == 1.0  # segmentation.fractions: the cost of every fraction is opt-in
            if kind == "segmentation" and (full or cfg.robustness.all_fractions):
                p = shift_params(cfg, params, family)
                jobs.append((run_name(p), "robustness", p, (key,)))
    return jobs


def add_external_flags(parser: argparse.ArgumentParser) -> None:
    """``--external-test PATH --external-kind KIND``: an external test set for the robustness study.

    Args:
        parser: the launcher's parser.
    """
    parser.add_argument("--external-test", default=None, help="external test set folder (robustness study)")
    parser.add_argument("--external-kind", default=None, help="its layout: la2018 | msd | lascarqs | nnunet")


def with_external(cfg: StudyConfig, args: argparse.Namespace) -> StudyConfig:
    """The config with the external test set of ``--external-test``/``--external-kind`` (robustness on, family
    ``external`` added); unchanged without the flags.

    Args:
        cfg: the loaded config.
        args: parsed flags of :func:`add_external_flags`.
    """
    if not args.external_test and not args.external_kind:
        return cfg
    if not (args.external_test and args.external_kind):
        raise ConfigError("--external-test and --external-kind go together (kinds: la2018, msd, lascarqs, nnunet)")
    section = to_dict(cfg.robustness)
    path = str(Path(args.external_test).expanduser().resolve())  # the jobs may run in another folder
    section.update(enabled=True, external={"path": path, "kind": args.external_kind})
    if "external" not in section["families"]:
        section["families"] = [*section["families"], "external"]
    robustness = build_section(type(cfg.robustness), section, "robustness")
    return dataclasses.replace(cfg, robustness=robustness)


def run_robustness(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Evaluate one trained segmenter on one family's shifted test sets; rows go to ``robustness.csv``."""
    import torch

    from benchmark import results
    from benchmark.engine.device import resolve_device
    from benchmark.robustness.shifts import EXTERNAL, clean_cases, external_spacing, shifted_sets
    from benchmark.segmentation.arms import parse_arm
    from benchmark.segmentation.evaluate import evaluate_cases
    from benchmark.segmentation.model import load_segmenter

    cfg, split, seed, family = study.cfg, int(p["split"]), int(p["seed"]), p["shift"]
    if cfg.train.threads > 0:  # as the engine does for training: one thread per pool worker on a laptop
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.device)  # cuda without a usable GPU is a one-line error, never a silent CPU run
    model = load_segmenter(study.seg_dir(split, seed, arm_folder(p)), cfg.segmentation, device)
    clean = clean_cases(study.manifest, study.plan.splits[split].test_cases)
    expected = external_spacing(cfg) if family == EXTERNAL else cfg.data.expected_spacing
    keys = {"study": cfg.name, "split": split, "seed": seed, "arm": arm_folder(p), "generator": parse_arm(p["arm"])[1]}
    frames, means = [], {}
    for severity, cases in shifted_sets(cfg, family, clean, p["severities"], int(p.get("corruption_seed", 0))):
        predictions = {c: model.predict(image) for c, (image, _, _) in cases.items()}
        rows = evaluate_cases(predictions, cases, target=cfg.segmentation.target, expected_spacing=expected, **keys)
        frames.append(rows.assign(shift=family, severity=severity))
        for metric in ("dice", "hd95"):
            means[f"{metric}_{family}_s{severity}"] = float(rows.loc[rows.metric == metric, "value"].mean())
    results.write_shifted(results.concat(frames, results.SHIFT_COLUMNS), out, tracker)
    tracker.log_metrics({k: v for k, v in means.items() if v == v})  # NaN: no defined value at that severity
    return {"shift": family, "severities": p["severities"], "n_cases": len(cases), "means": means}


KIND = JobKind(
    name="robustness",
    sections=("data", "preprocess", "composite", "splits", "train", "segmentation"),
    run_name=run_name,
    out_dir=lambda study, p: study.robust_dir(p["split"], p["seed"], arm_folder(p), p["shift"]),
    body=run_robustness,
)
