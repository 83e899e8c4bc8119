"""Job callables of a sweep. Each runs the same in process, under submitit's local executor or on Slurm.

A job gets a ``JobSpec`` (the resolved config as a plain dict, its parameters and where to track), rebuilds the
study from it, opens its MLflow child run (rank 0 only), runs its stage and closes the run as FINISHED or
FAILED with the error. ``JobRunner`` is ``Checkpointable``: on preemption or time-out submitit requeues it and
the rerun resumes from the engine's last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from benchmark.atomic import write_text_atomic
from benchmark.config import StudyConfig, build_section, config_hash, flatten, save_config, to_dict
from benchmark.segmentation.arms import parse_arm
from benchmark.study import Study, data_fingerprint
from benchmark.tracking.tracker import NullTracker, Tracker

DONE_FILE = "done.json"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs, picklable.

    Args:
        stage: ``generator`` | ``segmentation`` | ``quality``.
        key: stable job name (also the MLflow run name).
        params: stage parameters (generator, scope, split, seed, arm, ratio).
        config: ``to_dict`` of the resolved StudyConfig.
        tracking_uri / experiment_id / parent_run_id: where to log (None: no tracking).
        cfg_hash: hash of the config sections and parameters this job's result depends on.
    """

    stage: str
    key: str
    params: dict[str, Any]
    config: dict[str, Any]
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    cfg_hash: str


def run_name(stage: str, p: dict[str, Any]) -> str:
    """Stable run names that line up in the MLflow compare view, e.g. ``seg/split2/seed0/real+spade_ldm``."""
    if stage == "generator":
        return f"gen/{p['scope']}/{p['generator']}/seed{p['seed']}"
    if stage == "quality":
        return f"quality/split{p['split']}/{p['generator']}/seed{p['seed']}"
    ratio = p.get("ratio", 1.0)
    arm = p["arm"] + (f"@r{ratio:g}" if ratio != 1.0 else "")
    return f"seg/split{p['split']}/seed{p['seed']}/{arm}"


_SECTIONS = {
    "generator": ("data", "preprocess", "composite", "splits", "train"),
    "segmentation": ("data", "preprocess", "composite", "splits", "train", "segmentation"),
    "quality": ("data", "preprocess", "composite", "splits", "train", "segmentation", "metrics"),
}


def job_hash(cfg: StudyConfig, stage: str, params: dict[str, Any]) -> str:
    """Hash of what a job's result depends on: its config sections, its generator's section and its parameters."""
    d = to_dict(cfg)
    parts = {k: d[k] for k in _SECTIONS[stage]}
    gen = params.get("generator") or (parse_arm(params["arm"])[1] if "arm" in params else None)
    if gen:
        parts["generator"] = d["generators"][gen]
    return config_hash({"parts": parts, "params": params})


def code_version() -> str:
    """The git commit of the suite (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def out_dir(study: Study, stage: str, p: dict[str, Any]) -> Path:
    """The folder a job writes (its ``done.json`` marks success)."""
    if stage == "generator":
        return study.generator_dir(p["generator"], p["scope"], p["seed"])
    if stage == "quality":
        return study.quality_dir(p["generator"], p["split"], p["seed"])
    return study.seg_dir(p["split"], p["seed"], run_name(stage, p).rsplit("/", 1)[1])


def already_done(spec: JobSpec, study: Study) -> bool:
    """True when the job's output is on disk with the same hash and (if tracked) its MLflow run FINISHED."""
    marker = out_dir(study, spec.stage, spec.params) / DONE_FILE
    if not marker.is_file():
        return False
    try:
        if json.loads(marker.read_text()).get("cfg_hash") != spec.cfg_hash:
            return False
    except json.JSONDecodeError:
        return False
    if spec.tracking_uri is None:
        return True
    from benchmark.tracking.tracker import find_finished_run

    return find_finished_run(spec.tracking_uri, spec.experiment_id, spec.key, spec.cfg_hash) is not None


def _tracker(spec: JobSpec, study: Study) -> Tracker:
    from benchmark.engine.distributed import get_rank

    if spec.tracking_uri is None or get_rank() != 0:
        return NullTracker()
    from benchmark.tracking.tracker import MLflowTracker

    p = spec.params
    tags = {
        "stage": spec.stage,
        "job_key": spec.key,
        "config_hash": spec.cfg_hash,
        "git_commit": code_version(),
        "protocol": study.cfg.splits.protocol,
        "leaky_protocol": study.cfg.splits.protocol == "shared",
        **{k: v for k, v in p.items()},
        **data_fingerprint(study),
    }
    if spec.stage == "quality":
        tags["backbone_requested"] = study.cfg.metrics.backbone
    tracker = MLflowTracker(
        spec.tracking_uri,
        spec.experiment_id,
        spec.key,
        tags,
        spec.parent_run_id,
        spool_dir=study.root / "tracking-spool",
    )
    tracker.log_params(flatten(study.cfg))
    return tracker


def execute(spec: JobSpec) -> dict[str, Any]:
    """Run one job: the body of every executor's job.

    Returns:
        A small JSON-safe summary (also written as ``done.json``).
    """
    from benchmark.run.kinds import STAGES

    if not logging.getLogger().handlers:  # progress lines of the engine in the job's log
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = build_section(StudyConfig, spec.config, "")
    study = Study(cfg)
    tracker = _tracker(spec, study)
    _ACTIVE["tracker"] = tracker
    out = out_dir(study, spec.stage, spec.params)
    t0 = time.time()
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        summary = STAGES[spec.stage](study, spec.params, out, tracker)
        summary = {"key": spec.key, "cfg_hash": spec.cfg_hash, "seconds": round(time.time() - t0, 2), **summary}
        tracker.log_metrics({"job_seconds": summary["seconds"]})
        tracker.log_artifact(out / "config.yaml")
        write_text_atomic(out / DONE_FILE, json.dumps(summary, indent=1, default=str))
        _ACTIVE.pop("tracker", None)
        tracker.end("FINISHED")
        return summary
    except BaseException as exc:
        if _ACTIVE.pop("tracker", None) is tracker:  # not already closed as KILLED by a requeue
            tracker.end("FAILED", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
        raise


_ACTIVE: dict[str, Tracker] = {}  # the running job's tracker, closed as KILLED when the job is preempted


class JobRunner(submitit.helpers.Checkpointable):
    """The submitted callable. On preemption or time-out submitit calls ``checkpoint`` and requeues the job; the
    rerun opens a new run (the interrupted one is closed as KILLED) and the engine resumes from disk."""

    def __call__(self, spec: JobSpec) -> dict[str, Any]:
        return execute(spec)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        tracker = _ACTIVE.pop("tracker", None)
        if tracker is not None:
            with contextlib.suppress(Exception):  # never block the requeue on tracking
                tracker.end("KILLED", error="preempted or timed out: requeued, resumes from its last checkpoint")
        return super().checkpoint(*args, **kwargs)


def start_parent_run(uri: str, experiment_id: str, study: Study, gens: list[str]) -> Tracker:
    """The sweep's parent run: config, data hash, code version, protocol."""
    from benchmark.tracking.tracker import MLflowTracker

    cfg = study.cfg
    tags = {
        "stage": "sweep",
        "protocol": cfg.splits.protocol,
        "leaky_protocol": cfg.splits.protocol == "shared",
        "generators": ",".join(gens),
        "git_commit": code_version(),
        "executor": cfg.cluster.executor,
        **data_fingerprint(study),
    }
    tracker = MLflowTracker(uri, experiment_id, f"sweep/{cfg.name}", tags, spool_dir=study.root / "tracking-spool")
    tracker.log_params(flatten(cfg))
    tracker.log_artifact(study.root / "config.yaml")
    tracker.log_artifact(study.splits_path)
    return tracker


def finish_sweep(study: Study, parent: Tracker | None, outcomes: dict, seconds: float) -> Path | None:
    """Analysis after the jobs: summary table on stdout, report file, parent run closed."""
    from benchmark.run.kinds import summarise_study
    from benchmark.tracking.tracker import replay_spool

    report = None
    if parent is not None:  # what jobs could not send while the server was away
        replay_spool(study.root / "tracking-spool", getattr(parent, "uri", None), quiet=True)
    try:
        report = summarise_study(study, outcomes)
        if parent is not None and report is not None:
            parent.log_artifact(report)
    finally:
        if parent is not None:
            failed = [k for k, o in outcomes.items() if o.status != "done"]
            parent.log_metrics({"sweep_seconds": seconds, "jobs": len(outcomes), "jobs_failed": len(failed)})
            parent.end("FAILED" if failed else "FINISHED", error=", ".join(failed)[:4000] or None)
    return report
