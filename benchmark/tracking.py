"""Experiment tracking. ``MLflowTracker`` is the only code in the suite that imports mlflow.

Jobs receive a ``Tracker``; on ranks other than 0 and in tests it is a ``NullTracker``, so model and engine
code never checks ranks or tracking settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
