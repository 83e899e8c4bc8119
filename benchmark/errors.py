"""Errors the suite raises on bad input.

Library code raises one of these; only launchers turn them into a one-line message and a non-zero exit
(``benchmark.run.cli.main_guard``). Every message names the file, key or flag at fault.
"""

from __future__ import annotations

from pathlib import Path


class BenchmarkError(Exception):
    """Base class: a problem a user can fix (bad input, bad config, missing artifact)."""


class ConfigError(BenchmarkError):
    """A config key, value or file is wrong. The message starts with the full key path."""


class DataError(BenchmarkError):
    """A data file is missing, unreadable or inconsistent.

    Args:
        path: the file (or folder) at fault; it starts the message.
        problem: what is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:
        # rebuilt from (path, problem), not from the message: a pool worker's error must reach the driver intact
        return type(self), (self.path, self.problem)


class CheckpointError(DataError):
    """A checkpoint is corrupt, foreign or does not match the model it is loaded into."""


class TrainingError(BenchmarkError):
    """Training diverged (NaN/inf loss) or cannot continue."""


class TrackingError(BenchmarkError):
    """The tracking server cannot be reached or refused a request."""
