"""What a study's driver leaves on disk so that the study outlives it: the job records, the driver lock, claims.

- ``<study>/state/jobs.json``: job key -> ``JobRecord`` (kind, config hash, attempt, Slurm job id, log paths, submit
  time, and for in-driver executors the last status the driver saw). Every update is a locked read-modify-write
  followed by an atomic rename, so two processes never lose each other's records and a killed driver never leaves
  half a file.
- ``<study>/state/driver.lock``: held by the driver that runs or submits the study. A second driver on the same
  study waits for a submission to end (Slurm) or is refused with the first one named (in-driver executors).
- ``<job folder>/.claim.lock``: held by the one attempt of a job that writes the folder (``claim_folder``).

Locks are ``fcntl.flock`` locks: the kernel drops them when the holder dies, so a killed driver or job never
leaves a stale lock behind (on NFS/Lustre they need a client with working locks, as sqlite does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STATE_DIR = "state"
JOBS_FILE = "jobs.json"
CLAIM_FILE = ".claim.lock"


@dataclass
class JobRecord:
    """One job of a study as its driver submitted it.

    Args:
        key: the job key (also the MLflow run name).
        kind: the job kind.
        cfg_hash: the hash of what the job's result depends on (a record of another hash is of another config).
        attempt: 1 for the first submission, +1 for each re-submission after a failure.
        executor: ``debug`` | ``pool`` | ``local`` | ``slurm``.
        job_id: the Slurm job id (``123`` or ``123_4`` for an array task); None for in-driver executors.
        status: the last status the driver recorded (``submitted`` on Slurm, whose state is read from Slurm).
        deps: the keys of the jobs it waits for.
        out: its output folder (where its ``done.json`` appears).
        stdout / stderr: its log files (None where the executor keeps none).
        submitted_at: Unix time of the submission.
        error: the last error line the driver saw.
    """

    key: str
    kind: str
    cfg_hash: str
    attempt: int = 1
    executor: str = "debug"
    job_id: str | None = None
    status: str = "submitted"
    deps: list[str] = field(default_factory=list)
    out: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    submitted_at: float = 0.0
    error: str = ""


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class StudyState:
    """The job records of one study (``<study>/state/jobs.json``).

    Args:
        root: the study folder.
    """

    def __init__(self, root: str | Path):
        self.dir = Path(root) / STATE_DIR
        self.path = self.dir / JOBS_FILE

    def load(self) -> dict[str, JobRecord]:
        """Every record by job key (empty when the study was never submitted)."""
        if not self.path.is_file():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {k: JobRecord(**v) for k, v in raw["jobs"].items()}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(self.path, f"is not a study state file ({exc}); move it away to start afresh") from None

    def update(self, records: Iterable[JobRecord]) -> None:
        """Add or replace records (a locked read-modify-write, then an atomic rename)."""
        records = list(records)
        if not records:
            return
        with _flock(self.dir / "jobs.lock"):
            jobs = self.load()
            jobs.update({r.key: r for r in records})
            doc = {"jobs": {k: asdict(r) for k, r in sorted(jobs.items())}}
            write_text_atomic(self.path, json.dumps(doc, indent=1) + "\n")

    def set_status(self, key: str, status: str, error: str = "") -> None:
        """Record an in-driver job's status (no-op for a key without a record)."""
        with _flock(self.dir / "jobs.lock"):
            jobs = self.load()
            if key not in jobs:
                return
            jobs[key].status, jobs[key].error = status, error[-500:]
            doc = {"jobs": {k: asdict(r) for k, r in sorted(jobs.items())}}
            write_text_atomic(self.path, json.dumps(doc, indent=1) + "\n")


def _holder_line(info: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {since}: {info.get('command', '?')}"


@contextlib.contextmanager
def driver_lock(root: str | Path, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the study's driver lock; a second driver waits up to ``wait_s`` seconds, then is refused.

    Args:
        root: the study folder.
        wait_s: how long to wait for another driver's hold to end (0: refuse at once).

    Raises:
        ConfigError: another driver holds the study, named by pid, host, start time and command.
    """
    state_dir = Path(root) / STATE_DIR
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(state_dir, f"cannot create the study's state folder: {exc.strerror or exc}") from None
    info_path = state_dir / "driver.json"
    deadline = time.monotonic() + wait_s
    with open(state_dir / "driver.lock", "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        holder = _holder_line(json.loads(info_path.read_text()))
                    except (OSError, json.JSONDecodeError):
                        holder = "another process"
                    raise ConfigError(
                        f"{root}: another driver is running this study ({holder}); wait for it to finish, "
                        "or watch it with --status"
                    ) from None
                time.sleep(0.2)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": " ".join(sys.argv)}
        write_text_atomic(info_path, json.dumps(me) + "\n")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim_folder(folder: str | Path, holder: str) -> Iterator[None]:
    """Hold a job folder for one attempt: a second copy of the job waits here until the first has let go.

    Args:
        folder: the job's output folder (its checkpoints live inside).
        holder: who holds it (written next to the lock for a reader), e.g. ``slurm 123_4 attempt 2``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CLAIM_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            log.warning("%s is held by %s; waiting for it to let go", folder, fh.read().strip() or "another attempt")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{holder} (pid {os.getpid()} on {socket.gethostname()})\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
