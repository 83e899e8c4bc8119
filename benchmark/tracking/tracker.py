"""Experiment tracking, the only module that imports mlflow (the read side gets its client from ``client_for``).

Jobs receive a ``Tracker``; on ranks other than 0 and in tests it is a ``NullTracker``, so model and engine
code never checks ranks or tracking settings.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.errors import TrackingError
from benchmark.tracking.auth import auth_error, check_server
from benchmark.tracking.spool import chunks, own_http_retries, transient

log = logging.getLogger(__name__)


class Tracker:
    """Interface of a tracker. The base class records nothing (it is the null tracker)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (flattened config)."""

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Record tags (stage, generator, arm, split, seed, hashes, ...)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record scalar metrics at a step (batched by implementations)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file (config, per-case CSV, montage PNG) to the run."""

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Close the run with ``FINISHED`` or ``FAILED`` (and the error message)."""


class NullTracker(Tracker):
    """Records nothing: used on rank > 0, in tests and when tracking is disabled."""


class MemoryTracker(Tracker):
    """Keeps everything in memory: for tests that check what a job logged."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.artifacts: list[str] = []
        self.status: str | None = None
        self.error: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(str(path))

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        self.status, self.error = status, error


# ---------------------------------------------------------------------------------------------------------
# MLflow (the only place that imports it)

MLFLOW_PARENT_TAG = "mlflow.parentRunId"


def default_uri(study_dir: str | Path) -> str:
    """The default store: a sqlite database inside the study folder (one machine only)."""
    return f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any job is submitted, when an HTTP tracking server does not answer or refuses the
    credentials (``benchmark.tracking.auth.check_server``); ``timeout``: seconds per request."""
    check_server(uri, timeout, lambda: client_for(uri).search_experiments(max_results=1))


def client_for(uri: str):
    """An ``MlflowClient`` for ``uri`` (mlflow is imported here, on first use)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive file lock next to a local sqlite store (no-op for other stores).

    MLflow creates and migrates a fresh sqlite database on first use, and several processes doing that at once
    crash ("table ... already exists"): jobs started by hand on one study go through this lock.
    """
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]  # drop SQLAlchemy query options (?timeout=...)
    if not uri.startswith("sqlite:///") or path in ("", ":memory:"):
        yield
        return
    import fcntl

    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


def ensure_experiment(uri: str, name: str, artifact_dir: str | Path | None = None) -> str:
    """Create (once) or look up the study's experiment; returns its id.

    The sweep driver calls this before any job starts. Processes that call it at once (launchers started by hand
    on one study) are safe: a local sqlite store is created under a file lock, and an experiment that another
    process created first (on a server too) is looked up instead. ``artifact_dir`` serves local stores only."""
    from mlflow.exceptions import MlflowException

    with _store_lock(uri):
        client = client_for(uri)
        try:
            exp = client.get_experiment_by_name(name)
        except MlflowException as exc:
            raise auth_error(uri, exc, f"experiment {name!r}") or exc from None
        if exp is not None:
            return exp.experiment_id
        local = artifact_dir is not None and not uri.startswith(("http://", "https://"))
        location = Path(artifact_dir).resolve().as_uri() if local else None  # over HTTP: the server's proxied store
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            exp = client.get_experiment_by_name(name) if exc.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if exp is None:
                raise auth_error(uri, exc, f"create experiment {name!r}") or exc from None
            return exp.experiment_id


def find_finished_run(uri: str, experiment_id: str, job_key: str, cfg_hash: str) -> str | None:
    """Id of a FINISHED run of ``job_key`` with the same config hash, if any (for idempotent re-runs)."""
    runs = client_for(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.job_key = '{job_key}' and tags.config_hash = '{cfg_hash}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits


def _send_op(client: Any, run_id: str, op: dict[str, Any]) -> None:
    """Send one queued operation (also used by ``replay_spool``)."""
    from mlflow.entities import Metric, Param, RunTag

    kind = op["op"]
    if kind == "batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(ts), int(s)) for k, v, ts, s in op.get("metrics", [])],
            params=[Param(k, v) for k, v in op.get("params", [])],
            tags=[RunTag(k, v) for k, v in op.get("tags", [])],
        )
    elif kind == "artifact":
        client.log_artifact(run_id, op["path"], op.get("artifact_path"))
    elif kind == "end":
        if op.get("error"):
            client.set_tag(run_id, "error", op["error"][:5000])
        client.set_terminated(run_id, op["status"])
    else:
        raise TrackingError(f"unknown tracking operation {kind!r}")


class MLflowTracker(Tracker):
    """Logs one run to MLflow; never loses what it was given while the tracking server is away.

    Metric points are batched (``flush_every``). Every operation goes through an ordered queue: while the
    server answers it is sent at once; when it does not, the job carries on and the queue is retried with
    exponential back-off (0.5 s doubling to ``max_delay``) at later calls, and is also written to a local fallback store
    (``benchmark.tracking.spool``) so a job killed during the outage loses nothing it had flushed. ``end`` keeps
    trying for ``patience`` seconds; if the server is still away the spool file is closed and replayed later by
    ``replay_spool`` (the next tracker that ends with the server back does this by itself). Creating the run
    retries the same way and raises ``TrackingError`` when the server stays away.

    Args:
        uri: tracking URI.
        experiment_id: from ``ensure_experiment``.
        run_name: e.g. ``seg/split2/real+spade_ldm``.
        tags: initial tags.
        parent_run_id: the sweep's parent run (child runs nest under it in the UI).
        flush_every: metric points buffered before a batch is queued.
        retries: attempts at least, when creating the run and at ``end``.
        patience: seconds at least to keep trying when creating the run and at ``end``.
        spool_dir: the local fallback store (default ``$LGE_TRACKING_SPOOL`` or ``~/.cache/lge-synthbench``).
        request_timeout: seconds one HTTP request may take.
        max_delay: longest back-off between two tries of the queue, seconds.
        run_id: an existing run to log into and end instead of creating one (a sweep's parent run, closed on Slurm
            by the study's report job).
    """

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        run_name: str,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        flush_every: int = 200,
        retries: int = 6,
        patience: float = 120.0,
        spool_dir: str | Path | None = None,
        request_timeout: float = 30.0,
        max_delay: float = 15.0,
        run_id: str | None = None,
    ):
        from benchmark.tracking.spool import Spool, default_spool_dir

        self.uri, self.retries, self.flush_every, self.patience = uri, retries, flush_every, patience
        self.request_timeout = request_timeout
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        self.client = client_for(uri)
        self._buffer: list[list] = []
        self._queue: list[dict[str, Any]] = []
        self._delay, self._next_try = 0.5, 0.0
        self.max_delay = max_delay
        self.outages: list[tuple[float, float]] = []  # wall-clock (start, end) of each time the server was away
        self._down_since: float | None = None
        token = uuid.uuid4().hex
        all_tags = {k: str(v) for k, v in (tags or {}).items()} | {"tracker_token": token}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_TAG] = parent_run_id
        if run_id is None:
            run = self._blocking(lambda: self._create_run(experiment_id, all_tags, run_name, token), "create the run")
            run_id = run.info.run_id
        self.run_id = run_id
        self._spool = Spool(self.spool_dir, {"uri": uri, "run_id": self.run_id, "run_name": run_name})

    def _create_run(self, experiment_id: str, tags: dict[str, str], run_name: str, token: str):
        # a create_run whose answer was lost may have created the run: find it instead of making a twin
        found = self.client.search_runs([experiment_id], filter_string=f"tags.tracker_token = '{token}'")
        return found[0] if found else self.client.create_run(experiment_id, tags=tags, run_name=run_name)

    def _blocking(self, fn, what: str):
        t0, delay, attempt = time.monotonic(), 0.5, 0
        while True:
            try:
                with own_http_retries(self.request_timeout):
                    return fn()
            except Exception as exc:  # MlflowException, requests and sqlite errors
                attempt += 1
                if not transient(exc):
                    raise auth_error(self.uri, exc, what) or TrackingError(f"tracking at {self.uri} refused to "
                                                                           f"{what}: {exc}") from None  # fmt: skip
                if attempt > self.retries and time.monotonic() - t0 > self.patience:
                    raise TrackingError(f"tracking at {self.uri}: could not {what} after {attempt} attempts "
                                        f"over {time.monotonic() - t0:.0f} s: {exc}") from None  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -------------------------------------------------------------------------------------------- the queue

    @property
    def pending(self) -> int:
        """Operations queued but not yet acknowledged by the tracking store."""
        return len(self._queue)

    def _enqueue(self, ops: list[dict[str, Any]]) -> None:
        self._queue.extend(ops)
        if self._spool.active:
            self._spool.append(ops)
        self._drain()

    def _drain(self) -> bool:
        """Send queued operations in order until one fails; True when the queue is empty."""
        if not self._queue or time.monotonic() < self._next_try:
            return not self._queue
        while self._queue:
            op = self._queue[0]
            try:
                with own_http_retries(self.request_timeout):
                    _send_op(self.client, self.run_id, op)
            except Exception as exc:
                if not transient(exc):
                    self._queue.pop(0)  # dropped, so the rest of the queue (and a later end) still goes through
                    refused = f"tracking at {self.uri} refused {op['op']} for run {self.run_id}: {exc}"
                    raise auth_error(self.uri, exc, f"run {self.run_id}") or TrackingError(refused) from None
                self._went_away()
                return False
            self._queue.pop(0)
        self._came_back()
        return True

    def _went_away(self) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("tracking server %s is not answering; keeping %d operation(s) in %s and retrying",
                        self.uri, len(self._queue), self._spool.path)  # fmt: skip
        if not self._spool.active:
            for op in self._queue:  # artifacts are copied: the job may change or delete the file meanwhile
                if op["op"] == "artifact" and not op.get("spooled"):
                    op.update(path=self._spool.keep_artifact(op["path"]), spooled=True)
            self._spool.append(self._queue)
        self._next_try = now + self._delay
        self._delay = min(self._delay * 2, self.max_delay)

    def _came_back(self) -> None:
        if self._down_since is not None:
            self.outages.append((self._down_since, time.time()))
            log.warning("tracking server %s is back after %.1f s; queue sent", self.uri, self.outages[-1][1]
                        - self.outages[-1][0])  # fmt: skip
            self._down_since = None
        self._spool.discard()
        self._delay, self._next_try = 0.5, 0.0

    # -------------------------------------------------------------------------------------- the interface

    def log_params(self, params: dict[str, Any]) -> None:
        items = [[k[:250], str(v)[:6000]] for k, v in params.items()]
        self._enqueue([{"op": "batch", "params": c} for c in chunks(items, _BATCH_LIMITS["params"])])

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [[k, str(v)] for k, v in tags.items()]
        self._enqueue([{"op": "batch", "tags": c} for c in chunks(items, _BATCH_LIMITS["tags"])])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend([k, float(v), now, int(step or 0)] for k, v in metrics.items())
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Queue the buffered metric points and try to send the queue (without waiting out a back-off)."""
        points, self._buffer = self._buffer, []
        self._enqueue([{"op": "batch", "metrics": c} for c in chunks(points, _BATCH_LIMITS["metrics"])])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).is_file():
            raise TrackingError(f"{path}: artifact file not found")
        op = {"op": "artifact", "path": str(path), "artifact_path": artifact_path}
        if self._queue:  # the server is away: keep a copy now
            op.update(path=self._spool.keep_artifact(path), spooled=True)
        self._enqueue([op])

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Close the run; waits up to ``patience`` s for an absent server, then leaves the rest to a replay."""
        points, self._buffer = self._buffer, []
        ops = [{"op": "batch", "metrics": c} for c in chunks(points, _BATCH_LIMITS["metrics"])]
        self._enqueue([*ops, {"op": "end", "status": status, "error": error}])
        t0, attempt = time.monotonic(), 0
        while not self._drain():
            attempt += 1
            if attempt > self.retries and time.monotonic() - t0 > self.patience:
                closed = self._spool.close()
                log.warning("tracking server %s still away after %.0f s: %d operation(s) of run %s kept in %s; "
                            "they are sent by replay_spool or the next run that ends with the server back",
                            self.uri, time.monotonic() - t0, len(self._queue), self.run_id, closed)  # fmt: skip
                return
            time.sleep(max(0.05, self._next_try - time.monotonic()))
        replay_spool(self.spool_dir, self.uri, quiet=True)


def replay_spool(spool_dir: str | Path | None = None, uri: str | None = None, quiet: bool = False) -> dict[str, int]:
    """Send what runs kept in the local fallback store while their tracking server was away.

    Args:
        spool_dir: the spool folder (default: as ``MLflowTracker``).
        uri: only runs logged to this tracking URI (None: all).
        quiet: stop at the first failure without raising (used by trackers after their own ``end``).

    Returns:
        Counts: ``runs`` replayed completely, ``ops`` sent, ``left`` operations still kept (server away).
    """
    from benchmark.tracking import spool as sp

    def sender(header: dict[str, Any]):
        # the same client as the run's tracker: it reads the same environment (or ~/.netrc) credentials
        client = client_for(header["uri"])

        def send(op: dict[str, Any]) -> None:
            try:
                _send_op(client, header["run_id"], op)
            except Exception as exc:
                raise auth_error(header["uri"], exc, f"run {header['run_id']}") or exc from None

        return send

    return sp.replay(spool_dir or sp.default_spool_dir(), uri, sender, quiet)
