"""A study on Slurm: submit the whole job graph, re-attach on a re-run, follow, cancel.

``submit_study`` decides for every job of the graph: ``done`` (its ``done.json`` has its config hash: skipped),
``active`` (queued or running on Slurm from an earlier submission: left alone and followed, its id reused by the
jobs that wait for it) or ``submit`` (never submitted, or failed/cancelled: submitted again as the next attempt, into
the same output folder, resuming from its checkpoints). Jobs are submitted in dependency order, those of one kind
with the same dependencies as one job array, each group recorded in the study state before the next is submitted.
The study's first job prepares the data; its last one, the report, waits for all others (``afterany``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark.errors import ConfigError
from benchmark.run import slurm
from benchmark.run.job import JobRunner, JobSpec
from benchmark.run.state import JobRecord, StudyState, driver_lock
from benchmark.run.status import JobStatus, format_status, study_status
from benchmark.study import Study

SUBMIT_LOCK_WAIT_S = 600.0  # a second driver waits this long for another one's submission to end


def submitit_folder(study: Study) -> Path:
    """Where submitit keeps the study's pickles and logs (``cluster.folder``, default ``<study>/submitit``)."""
    return Path(study.cfg.cluster.folder or study.root / "submitit")


@dataclass
class PlannedJob:
    """One job of the graph with its spec and what ``submit_study`` decided for it."""

    spec: JobSpec
    deps: tuple[str, ...]
    out: Path
    action: str = "submit"  # done | active | submit
    job_id: str | None = None
    attempt: int = 1
    after: list[str] = field(default_factory=list)  # Slurm ids it waits for


def plan_jobs(
    jobs: list[PlannedJob], records: dict[str, JobRecord], states: dict[str, JobStatus], is_done: Callable
) -> None:
    """Decide done / active / submit for every job, in place.

    Args:
        jobs: the graph in dependency order.
        records: the study's job records (earlier submissions).
        states: job key -> its current standing (``study_status``).
        is_done: PlannedJob -> whether its output is on disk with its hash.

    Raises:
        ConfigError: a job of another config is still queued or running under the same key.
    """
    stale = []
    for job in jobs:
        rec, st = records.get(job.spec.key), states.get(job.spec.key)
        if is_done(job):
            job.action = "done"
        elif rec is not None and st is not None and st.status in ("queued", "running") and rec.executor == "slurm":
            if rec.cfg_hash != job.spec.cfg_hash:
                stale.append(f"{job.spec.key} (Slurm job {rec.job_id})")
            job.action, job.job_id, job.attempt = "active", rec.job_id, rec.attempt
        else:
            job.action, job.attempt = "submit", (rec.attempt + 1 if rec is not None else 1)
    if stale:
        raise ConfigError(
            f"jobs of another config of this study are still queued or running: {', '.join(stale[:5])}; "
            "cancel them with --cancel (or wait for them) before submitting this config"
        )


def _waves(jobs: list[PlannedJob]) -> list[list[PlannedJob]]:
    by_key = {j.spec.key: j for j in jobs}
    level: dict[str, int] = {}
    for j in jobs:  # dependency order: a job's dependencies have their level already
        level[j.spec.key] = 1 + max((level[d] for d in j.deps if by_key[d].action == "submit"), default=-1)
    waves: dict[int, list[PlannedJob]] = {}
    for j in jobs:
        if j.action == "submit":
            waves.setdefault(level[j.spec.key], []).append(j)
    return [waves[k] for k in sorted(waves)]


def _record(job: PlannedJob, sjob: Any, when: float) -> JobRecord:
    return JobRecord(
        key=job.spec.key,
        kind=job.spec.kind,
        cfg_hash=job.spec.cfg_hash,
        attempt=job.attempt,
        executor="slurm",
        job_id=str(sjob.job_id),
        deps=list(job.deps),
        out=str(job.out),
        stdout=str(sjob.paths.stdout),
        stderr=str(sjob.paths.stderr),
        submitted_at=when,
    )


def submit_planned(jobs: list[PlannedJob], study: Study, folder: Path, state: StudyState) -> int:
    """Submit every job marked ``submit``: dependency waves, one array per (kind, dependencies) group.

    Returns:
        The number of jobs submitted.
    """
    by_key = {j.spec.key: j for j in jobs}
    cfg, n = study.cfg.cluster, 0
    for wave in _waves(jobs):
        groups: dict[tuple, list[PlannedJob]] = {}
        for j in wave:
            after = sorted({by_key[d].job_id for d in j.deps if by_key[d].action != "done" and by_key[d].job_id})
            j.after = after
            groups.setdefault((j.spec.kind, tuple(after)), []).append(j)
        for (kind, after), group in groups.items():
            after_type = "afterany" if kind == "report" else "afterok"  # the report runs whatever became of the others
            ex = slurm.slurm_executor(cfg, kind, folder, study.cfg.name, list(after), after_type)
            sjobs = slurm.submit_group(ex, [(JobRunner(), (_with_attempt(j),)) for j in group], cfg)
            now = time.time()
            for j, sj in zip(group, sjobs, strict=True):
                j.job_id = str(sj.job_id)
            state.update(_record(j, sj, now) for j, sj in zip(group, sjobs, strict=True))
            n += len(group)
    return n


def _with_attempt(job: PlannedJob) -> JobSpec:
    return replace(job.spec, attempt=job.attempt)


def follow(study: Study, on_change: Callable[[JobStatus], None], poll_s: float) -> list[JobStatus]:
    """Wait until no job of the study is queued or running; report each job whose standing changes.

    Returns:
        The final standings.
    """
    seen: dict[str, str] = {}
    while True:
        statuses = study_status(study.root)
        for s in statuses:
            if seen.get(s.key) != s.status:
                seen[s.key] = s.status
                on_change(s)
        if not any(s.status in ("queued", "running") for s in statuses):
            return statuses
        time.sleep(poll_s)


def cancel_study(study: Study) -> list[str]:
    """``scancel`` exactly this study's queued and running Slurm jobs (by id from its records).

    Returns:
        The job keys cancelled.
    """
    with driver_lock(study.root, wait_s=SUBMIT_LOCK_WAIT_S):  # never between a submission and its record
        active = [s for s in study_status(study.root) if s.status in ("queued", "running")]
        ids = [s.record.job_id for s in active if s.record.executor == "slurm" and s.record.job_id]
        slurm.cancel(ids, submitit_folder(study))
    return [s.key for s in active if s.record.executor == "slurm"]


def status_text(study: Study) -> str:
    """What ``--status`` prints."""
    statuses = study_status(study.root)
    if not statuses:
        return f"study {study.cfg.name}: nothing submitted yet ({study.root})"
    return format_status(study.cfg.name, statuses)
