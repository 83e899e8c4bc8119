"""Experiment tracking. ``MLflowTracker`` is the only code in the suite that imports mlflow.

Jobs receive a ``Tracker``; on ranks other than 0 and in tests it is a ``NullTracker``, so model and engine
code never checks ranks or tracking settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.errors import TrackingError


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
    """Fail fast, before any job is submitted, when an HTTP tracking server does not answer.

    Args:
        uri: tracking URI; only ``http(s)://`` URIs are probed.
        timeout: seconds to wait for ``/health``.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"tracking server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"tracking server {uri} is unreachable ({exc}); start it or pass another --tracking-uri"
        ) from None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_dir: str | Path | None = None) -> str:
    """Create (once) or look up the study's experiment; returns its id.

    The driver calls this before any job starts: several processes creating a fresh sqlite store at once crash.
    """
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
    return client.create_experiment(name, artifact_location=location)


def find_finished_run(uri: str, experiment_id: str, job_key: str, cfg_hash: str) -> str | None:
    """Id of a FINISHED run of ``job_key`` with the same config hash, if any (for idempotent re-runs)."""
    runs = _client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.job_key = '{job_key}' and tags.config_hash = '{cfg_hash}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


class MLflowTracker(Tracker):
    """Logs one run to MLflow, batching metrics; retries with back-off when the server is briefly away.

    Args:
        uri: tracking URI.
        experiment_id: from ``ensure_experiment``.
        run_name: e.g. ``seg/split2/real+spade_ldm``.
        tags: initial tags.
        parent_run_id: the sweep's parent run (child runs nest under it in the UI).
        flush_every: metric points buffered before a ``log_batch``.
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
    ):
        self.uri, self.retries, self.flush_every = uri, retries, flush_every
        self.client = _client(uri)
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_TAG] = parent_run_id
        run = self._retry(lambda: self.client.create_run(experiment_id, tags=all_tags, run_name=run_name))
        self.run_id = run.info.run_id
        self._buffer: list = []

    def _retry(self, fn):
        import time

        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # mlflow raises MlflowException, requests errors, sqlite errors
                if attempt == self.retries:
                    raise TrackingError(f"tracking at {self.uri} failed after {self.retries} retries: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            self._retry(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items())
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self._retry(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        self.flush()
        if error:
            self._retry(lambda: self.client.set_tag(self.run_id, "error", error[:5000]))
        self._retry(lambda: self.client.set_terminated(self.run_id, status))
