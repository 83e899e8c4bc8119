"""Job callables of a sweep. Each runs the same in process, under submitit's local executor or on Slurm.

A job gets a ``JobSpec`` (the resolved config as a plain dict, its parameters and where to track), rebuilds the
study from it, opens its MLflow child run (rank 0 only), runs its kind's body and closes the run as FINISHED or
FAILED with the error. ``JobRunner`` is ``Checkpointable``: on preemption or time-out submitit requeues it and
the rerun resumes from the engine's last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from benchmark.atomic import write_text_atomic
from benchmark.config import StudyConfig, build_section, config_hash, flatten, save_config, to_dict
from benchmark.run.kinds import get_kind
from benchmark.segmentation.arms import parse_arm
from benchmark.study import Study, code_version, data_fingerprint
from benchmark.tracking.tracker import NullTracker, Tracker

DONE_FILE = "done.json"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job needs, picklable.

    Args:
        kind: the job kind's name (a key of ``benchmark.run.kinds.KINDS``).
        key: stable job name (also the MLflow run name).
        params: the kind's parameters (generator, scope, split, seed, arm, ratio).
        config: ``to_dict`` of the resolved StudyConfig.
        tracking_uri / experiment_id / parent_run_id: where to log (None: no tracking).
        cfg_hash: hash of the config sections and parameters this job's result depends on.
    """

    kind: str
    key: str
    params: dict[str, Any]
    config: dict[str, Any]
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    cfg_hash: str


def run_name(kind: str, p: dict[str, Any]) -> str:
    """Stable run names that line up in the MLflow compare view, e.g. ``seg/split2/seed0/real+spade_ldm``."""
    return get_kind(kind).run_name(p)


def job_hash(cfg: StudyConfig, kind: str, params: dict[str, Any]) -> str:
    """Hash of what a job's result depends on: its config sections, its generator's section and its parameters."""
    d = to_dict(cfg)
    parts = {k: d[k] for k in get_kind(kind).sections}
    gen = params.get("generator") or (parse_arm(params["arm"])[1] if "arm" in params else None)
    if gen:
        parts["generator"] = d["generators"][gen]
    return config_hash({"parts": parts, "params": params})


def out_dir(study: Study, kind: str, p: dict[str, Any]) -> Path:
    """The folder a job writes (its ``done.json`` marks success)."""
    return get_kind(kind).out_dir(study, p)


def already_done(spec: JobSpec, study: Study) -> bool:
    """True when the job's output is on disk with the same hash and (if tracked) its MLflow run FINISHED."""
    marker = out_dir(study, spec.kind, spec.params) / DONE_FILE
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
        "kind": spec.kind,
        "job_key": spec.key,
        "config_hash": spec.cfg_hash,
        "git_commit": code_version(),
        "protocol": study.cfg.splits.protocol,
        "leaky_protocol": study.cfg.splits.protocol == "shared",
        **{k: v for k, v in p.items()},
        **data_fingerprint(study),
    }
    tags.update(get_kind(spec.kind).tags(study))
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
    if not logging.getLogger().handlers:  # progress lines of the engine in the job's log
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = build_section(StudyConfig, spec.config, "")
    study = Study(cfg)
    tracker = _tracker(spec, study)
    _ACTIVE["tracker"] = tracker
    out = out_dir(study, spec.kind, spec.params)
    t0 = time.time()
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        summary = get_kind(spec.kind).body(study, spec.params, out, tracker)
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
        "kind": "sweep",
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
    from benchmark.analysis.collect import summarise_study
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
