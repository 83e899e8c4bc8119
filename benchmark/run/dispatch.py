"""Executors a driver waits on (debug | pool | local, and Slurm jobs polled by the profiler), and ``dispatch``.

Executors (``cluster.executor``):

- ``debug``: in this process, one job after another (errors surface with a plain traceback);
- ``pool``: ``cluster.max_local_jobs`` persistent worker processes on this machine, each importing the suite
  once (a job in a fresh process spends ~9 s importing torch and MONAI on a laptop CPU); the laptop default;
- ``local``: submitit's local executor, one process per job, up to ``cluster.max_local_jobs`` at once;
- ``slurm``: submitit's Slurm executor (``benchmark.run.slurm``), polled by this process: the profiler's grid.
  A study on Slurm does not use this: it is submitted whole and left on the cluster (``benchmark.run.submit``).

``dispatch`` runs a job graph: a job is submitted once every job it depends on has succeeded; a failed job
marks its dependants as skipped and everything independent carries on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import ClusterConfig
from benchmark.errors import ConfigError

POLL_SECONDS = 0.5


@dataclass
class JobNode:
    """One job of the graph.

    Args:
        key: unique, stable name (also the MLflow run name), e.g. ``seg/split2/seed0/real+spade_ldm``.
        kind: the job kind (``generator`` | ``quality`` | ``segmentation``; jobs of one kind are batched together).
        fn: a picklable callable (a ``submitit.helpers.Checkpointable`` for requeue-able jobs).
        args: its positional arguments.
        deps: keys of the jobs whose outputs it reads.
    """

    key: str
    kind: str
    fn: Callable[..., Any] | None  # None: already finished in an earlier run (counts as done at once)
    args: tuple = ()
    deps: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What became of a job: ``done`` | ``failed`` | ``skipped`` (a dependency failed)."""

    key: str
    status: str
    result: Any = None
    error: str = ""
    seconds: float = 0.0


class _InProcessJob:
    """The ``debug`` executor's job: runs at submit time in this process."""

    def __init__(self, fn: Callable[..., Any], args: tuple):
        self.job_id = "inproc"
        self.seconds = time.time()
        try:
            self._result, self._error = fn(*args), None
        except Exception as exc:  # a job's failure is reported, never fatal for the sweep
            self._result, self._error = None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        self.seconds = time.time() - self.seconds

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise RuntimeError(self._error)
        return self._result


def _quiet_worker() -> None:
    """Pool workers keep warnings only: their output is the sweep's terminal."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.time()
    return fn(*args), time.time() - start


class _PoolJob:
    """A pool future seen through the submitit job interface the dispatcher uses."""

    def __init__(self, future: Any):
        self.future, self.seconds = future, 0.0

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        try:
            result, self.seconds = self.future.result()
        except Exception as exc:  # the worker's exception, re-raised with its type and message
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        return result


def make_executor(cfg: ClusterConfig, folder: str | Path) -> Any:
    """A submitit executor for ``local`` or ``slurm`` (``debug`` needs none: returns None).

    Args:
        cfg: the cluster section.
        folder: where submitit writes pickles and logs; use a fresh folder per cluster (job ids restart at 1).
    """
    if cfg.executor == "debug":
        return None
    if cfg.executor == "pool":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            max_workers=max(1, cfg.max_local_jobs),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_quiet_worker,
        )
    import submitit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.executor == "local":
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        ex.update_parameters(
            timeout_min=cfg.timeout_min,
            cpus_per_task=cfg.cpus_per_task,
            tasks_per_node=cfg.tasks_per_node,
            gpus_per_node=cfg.gpus_per_node,
        )
        return ex
    if cfg.executor == "slurm":  # jobs polled by this process (the profiler's grid); studies use run.submit
        from benchmark.run.slurm import slurm_executor

        return slurm_executor(cfg, "job", folder, "profile", [])
    raise ConfigError(f"cluster.executor: {cfg.executor!r} is not one of debug, local, slurm")


def capacity(cfg: ClusterConfig) -> int:
    """How many jobs may be in flight at once."""
    local = max(1, cfg.max_local_jobs)
    return {"debug": 1, "pool": local, "local": local}.get(cfg.executor, max(1, cfg.array_parallelism))


@dataclass
class _State:
    pending: dict[str, JobNode]
    running: dict[str, tuple[Any, float]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def _ready(state: _State) -> list[JobNode]:
    out = []
    for node in list(state.pending.values()):
        failed = [d for d in node.deps if d in state.outcomes and state.outcomes[d].status != "done"]
        if failed:
            state.outcomes[node.key] = Outcome(node.key, "skipped", error=f"dependency failed: {', '.join(failed)}")
            del state.pending[node.key]
        elif all(d in state.outcomes for d in node.deps):
            out.append(node)
    return out


def dispatch(
    nodes: list[JobNode], cfg: ClusterConfig, folder: str | Path, on_outcome: Callable[[Outcome], None] | None = None
) -> dict[str, Outcome]:
    """Run a job graph on the configured executor.

    Args:
        nodes: the jobs; ``deps`` must name keys in ``nodes`` (or be empty).
        cfg: executor settings.
        folder: submitit folder.
        on_outcome: called as each job ends (progress printing).

    Returns:
        key -> Outcome for every node.
    """
    keys = {n.key for n in nodes}
    for n in nodes:
        missing = [d for d in n.deps if d not in keys]
        if missing:
            raise ConfigError(f"job {n.key}: depends on unknown jobs {missing}")
    executor = make_executor(cfg, folder)
    state = _State(pending={n.key: n for n in nodes})
    slots = capacity(cfg)
    while state.pending or state.running:
        ready = _ready(state)
        free = slots - len(state.running)
        done_before = [n for n in ready if n.fn is None]
        if done_before:
            _submit(executor, done_before, state)
        elif ready and free > 0:
            _submit(executor, ready[:free], state)
        _collect(state, on_outcome)
        if state.running:
            time.sleep(POLL_SECONDS)
        elif state.pending and not _ready(state):
            for key in list(state.pending):  # only reachable through a dependency cycle
                state.outcomes[key] = Outcome(key, "skipped", error="dependency cycle")
                del state.pending[key]
    if executor is not None and hasattr(executor, "shutdown"):
        executor.shutdown()
    return state.outcomes


def _submit(executor: Any, batch: list[JobNode], state: _State) -> None:
    for node in batch:
        del state.pending[node.key]
    for node in [n for n in batch if n.fn is None]:
        state.outcomes[node.key] = Outcome(node.key, "done", result="already finished")
    batch = [n for n in batch if n.fn is not None]
    if executor is None:
        for node in batch:
            state.running[node.key] = (_InProcessJob(node.fn, node.args), time.time())
        return
    if not hasattr(executor, "batch"):  # the process pool: futures, no job arrays
        for node in batch:
            state.running[node.key] = (_PoolJob(executor.submit(_timed, node.fn, *node.args)), time.time())
        return
    by_kind: dict[str, list[JobNode]] = {}
    for node in batch:
        by_kind.setdefault(node.kind, []).append(node)
    for kind, group in by_kind.items():
        executor.update_parameters(name=f"lge-{kind}")
        jobs = []
        with executor.batch():  # one Slurm job array per kind wave
            for node in group:
                jobs.append(executor.submit(node.fn, *node.args))
        now = time.time()
        for node, job in zip(group, jobs, strict=True):
            state.running[node.key] = (job, now)


def _collect(state: _State, on_outcome: Callable[[Outcome], None] | None) -> None:
    for key, (job, start) in list(state.running.items()):
        if not job.done():
            continue
        del state.running[key]
        try:
            result = job.results()[0] if getattr(job, "num_tasks", 1) > 1 else job.result()
            out = Outcome(key, "done", result=result, seconds=getattr(job, "seconds", 0) or time.time() - start)
        except Exception as exc:  # submitit wraps the job's exception; keep its message
            seconds = getattr(job, "seconds", 0) or time.time() - start
            out = Outcome(key, "failed", error=str(exc).strip()[-2000:], seconds=seconds)
        state.outcomes[key] = out
        if on_outcome is not None:
            on_outcome(out)
