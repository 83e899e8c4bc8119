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
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from benchmark.atomic import write_text_atomic
from benchmark.config import StudyConfig, build_section, config_hash, flatten, save_config, to_dict
from benchmark.run.kinds import get_kind
from benchmark.run.state import claim_folder
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
        attempt: 1 for the first submission of this job key, +1 for each re-submission after a failure.
    """

    kind: str
    key: str
    params: dict[str, Any]
    config: dict[str, Any]
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    cfg_hash: str
    attempt: int = 1


def run_name(kind: str, p: dict[str, Any]) -> str:
    """Stable run names that line up in the MLflow compare view, e.g. ``seg/split2/seed0/real+spade_ldm``."""
    return get_kind(kind).run_name(p)


def job_hash(cfg: StudyConfig, kind: str, params: dict[str, Any]) -> str:
    """Hash of what a job's result depends on: its config sections, its generator's section and its parameters."""
    d = to_dict(cfg)
    parts = {k: d[k] for k in get_kind(kind).sections}
    # a job's own fraction is in its params; the loader's worker count changes no number (batches are a function
    # of the step): neither re-runs a finished job
    for section, key in (("segmentation", "fractions"), ("train", "loader_workers")):
        if key in parts.get(section, {}):
            parts[section] = {k: v for k, v in parts[section].items() if k != key}
    gen = params.get("generator") or (parse_arm(params["arm"])[1] if "arm" in params else None)
    if gen:
        parts["generator"] = d["generators"][gen.partition("@")[0]]  # a variant (name@variant) hashes its name too
    return config_hash({"parts": parts, "params": params})


def out_dir(study: Study, kind: str, p: dict[str, Any]) -> Path:
    """The folder a job writes (its ``done.json`` marks success)."""
    return get_kind(kind).out_dir(study, p)


def done_summary(spec: JobSpec, study: Study) -> dict[str, Any] | None:
    """The job's ``done.json`` when its output is on disk with the same config hash, else None."""
    marker = out_dir(study, spec.kind, spec.params) / DONE_FILE
    try:
        summary = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("cfg_hash") == spec.cfg_hash else None


def already_done(spec: JobSpec, study: Study) -> bool:
    """True when the job's output is on disk with the same hash and (if tracked) its MLflow run FINISHED."""
    if done_summary(spec, study) is None:
        return False
    if spec.tracking_uri is None or not get_kind(spec.kind).tracked:
        return True
    from benchmark.tracking.tracker import find_finished_run

    return find_finished_run(spec.tracking_uri, spec.experiment_id, spec.key, spec.cfg_hash) is not None


def slurm_job_id() -> str | None:
    """This process's Slurm job id (``123`` or ``123_4`` for an array task), None outside Slurm."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def launcher_rank() -> int:
    """This process's global rank as its launcher (torchrun, submitit, Slurm) set it: the process group does not
    exist yet when a job starts. 0 in a single process."""
    from benchmark.engine.distributed import detect_env  # torch: only where a job runs, not in --status

    return detect_env().rank


def _tracker(spec: JobSpec, study: Study) -> Tracker:
    if spec.tracking_uri is None or launcher_rank() != 0 or not get_kind(spec.kind).tracked:
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
        "attempt": spec.attempt,
    }
    if slurm_job_id():
        tags["slurm_job_id"] = slurm_job_id()
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

    The job first claims its output folder (``benchmark.run.state.claim_folder``): a second copy of the same job,
    e.g. started by a second driver, waits for the first and then returns its summary without running again.

    Returns:
        A small JSON-safe summary (also written as ``done.json``).
    """
    rank = launcher_rank()
    if not logging.getLogger().handlers:  # progress lines of the engine in the job's log (rank 0's: one copy)
        logging.basicConfig(
            level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
        )
    cfg = build_section(StudyConfig, spec.config, "")
    study = Study(cfg)
    out = out_dir(study, spec.kind, spec.params)
    try:
        if rank != 0:  # rank 0 holds the folder, the run and the outputs for the job's ranks
            return _follow(spec, study, out, rank)
        return _lead(spec, study, out)
    finally:
        if launcher_world_size() > 1:  # the job's process group ends with it (gloo's threads, NCCL's communicators)
            from benchmark.engine import distributed

            distributed.cleanup()


def _lead(spec: JobSpec, study: Study, out: Path) -> dict[str, Any]:
    """Rank 0 (the only rank of a one-rank job): claims the folder, decides, runs, tracks and writes."""
    cfg = study.cfg
    holder = f"{spec.key} attempt {spec.attempt}" + (f" (Slurm job {slurm_job_id()})" if slurm_job_id() else "")
    with claim_folder(out, holder):
        done = done_summary(spec, study)
        if get_kind(spec.kind).trains and launcher_world_size() > 1:
            _rank0_decides(study, done is not None)
        if done is not None:
            logging.getLogger(__name__).info("%s: already finished by another attempt", spec.key)
            return done
        from benchmark.engine.checkpoint import prune  # torch: only where a job runs, not in --status
        from benchmark.engine.device import resolve_device

        if get_kind(spec.kind).trains:
            resolve_device(cfg.device)  # no silent CPU: device cuda on a node without a usable GPU stops here
        summary = _run(spec, study, out)
        # the last checkpoint stays: the trained weights, and what a rerun loads; keep_checkpoints=0 keeps every one
        if (out / "checkpoints").is_dir() and cfg.train.keep_checkpoints != 0:
            prune(out / "checkpoints", keep=1)
        return summary


def _follow(spec: JobSpec, study: Study, out: Path, rank: int) -> dict[str, Any]:
    """A rank other than 0 of a multi-rank job: it trains with rank 0 (the engine's collectives need every rank)
    and writes nothing: no MLflow run, no config, no samples or rows, no ``done.json``. A kind that trains nothing
    has nothing to share, so such a rank returns at once."""
    kind = get_kind(spec.kind)
    if not kind.trains or _rank0_decides(study, False):  # rank 0 returns at once too
        return {"key": spec.key, "rank": rank}
    return {"key": spec.key, "rank": rank, **kind.body(study, spec.params, out, NullTracker())}


def launcher_world_size() -> int:
    """The job's number of ranks as its launcher set it (the process group does not exist yet)."""
    from benchmark.engine.distributed import detect_env

    return detect_env().world_size


def _rank0_decides(study: Study, done: bool) -> bool:
    """Every rank of a multi-rank training job follows rank 0's decision, taken under the folder claim: ``True``
    when the job is already done (all ranks return), ``False`` when it runs (all ranks train). A rank's own look at
    ``done.json`` could differ from rank 0's (another attempt finishing in between), and a rank that trains alone
    waits on its group forever. Broadcast over the job's process group, which the engine's ``fit`` then reuses.

    Args:
        study: the job's study (its ``device`` picks the group's backend, as ``fit`` does).
        done: rank 0's decision (ignored on the other ranks).
    """
    import torch

    from benchmark.engine import distributed
    from benchmark.engine.device import resolve_device

    device = resolve_device(study.cfg.device)
    distributed.init_distributed("nccl" if device.type == "cuda" else "gloo")
    flag = torch.tensor([1.0 if done else 0.0], device=device)
    distributed.broadcast_(flag, src=0)
    return bool(flag.item())


def _run(spec: JobSpec, study: Study, out: Path) -> dict[str, Any]:
    kind = get_kind(spec.kind)
    tracker = _tracker(spec, study)
    _ACTIVE["tracker"] = tracker
    t0 = time.time()
    try:
        save_config(study.cfg, out)
        summary = kind.body(study, spec.params, out, tracker)
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
