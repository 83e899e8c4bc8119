"""The local fallback store of ``MLflowTracker``: what could not be sent yet, kept on disk until it is replayed.

While a tracking server is away, every operation a run still owes it (metric batches, params, tags, artifacts,
the final status) is appended to ``<spool>/<token>.open.jsonl``, so even a job killed during the outage loses
nothing it had flushed. Artifacts are copied next to it (``<spool>/<token>/a<n>/<file name>``), since the job
may change or delete the original. When the queue drains the file is deleted; when a run ends with the server
still away the file is closed (renamed to ``<token>.jsonl``) and replayed later by ``replay_spool``: from the
next tracker that ends with the server reachable, or by hand. Replaying is safe to repeat: MLflow drops a metric
point it already has (same key, value, step and timestamp) and the other operations overwrite themselves.

The first line of a spool file is its header (tracking URI, run id, host and pid of the writer); each further
line is one operation. Also here: which failures are worth retrying, and switching MLflow's own HTTP retries off
while the tracker does its own. Nothing here imports mlflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmark.atomic import is_temp, write_text_atomic

SPOOL_ENV = "LGE_TRACKING_SPOOL"
# MLflow error codes of a request the store understood and refused: retrying cannot help
PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE",
    "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND", "INVALID_REQUEST",
})  # fmt: skip
OPEN_SUFFIX = ".open.jsonl"
CLOSED_SUFFIX = ".jsonl"


def default_spool_dir() -> Path:
    """``$LGE_TRACKING_SPOOL``, else ``~/.cache/lge-synthbench/tracking-spool`` (a shared home on clusters)."""
    env = os.environ.get(SPOOL_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lge-synthbench" / "tracking-spool"


class Spool:
    """The on-disk copy of one run's unsent operations.

    Args:
        folder: the spool folder (created on first write).
        header: what a replay needs besides the operations (``uri``, ``run_id``).
    """

    def __init__(self, folder: str | Path, header: dict[str, Any]):
        self.folder = Path(folder)
        self.token = uuid.uuid4().hex
        self.header = {**header, "host": socket.gethostname(), "pid": os.getpid(), "token": self.token}
        self.path = self.folder / f"{self.token}{OPEN_SUFFIX}"
        self._artifacts = 0

    @property
    def active(self) -> bool:
        return self.path.is_file()

    def append(self, ops: list[dict[str, Any]]) -> None:
        """Add operations (the header is written first when the file does not exist yet)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [] if self.path.is_file() else [json.dumps(self.header)]
        lines += [json.dumps(op) for op in ops]
        with open(self.path, "a") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def keep_artifact(self, path: str | Path) -> str:
        """Copy an artifact into the spool (same file name) and return the copy's path."""
        self._artifacts += 1
        dst = self.folder / self.token / f"a{self._artifacts}" / Path(path).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst)
        return str(dst)

    def close(self) -> Path | None:
        """The run has ended with operations still unsent: hand the file over to ``replay_spool``."""
        if not self.path.is_file():
            return None
        closed = self.folder / f"{self.token}{CLOSED_SUFFIX}"
        os.replace(self.path, closed)
        return closed

    def discard(self) -> None:
        """Everything was sent: remove the file and the artifact copies."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.folder / self.token, ignore_errors=True)


def read_spool(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and operations of a spool file (a torn last line, from a kill mid-write, is dropped)."""
    header: dict[str, Any] = {}
    ops: list[dict[str, Any]] = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if i == 0:
            header = item
        else:
            ops.append(item)
    return header, ops


def _writer_gone(header: dict[str, Any]) -> bool:
    """True when the process that wrote an open spool file ran on this host and no longer exists."""
    if header.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(header.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def claim(folder: str | Path, uri: str | None = None) -> Iterator[tuple[Path, dict[str, Any], list[dict[str, Any]]]]:
    """Spool files ready for replay, each claimed by a rename so two replayers never take the same one.

    Ready: closed files, and open files whose writer (on this host) was killed. Yields (claimed path, header,
    operations); the caller deletes the claimed file after a full replay or calls ``release`` to put it back.

    Args:
        folder: the spool folder.
        uri: only files for this tracking URI (None: all).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        name = path.name
        # is_temp: still being written, e.g. by another replayer's ``release``
        if is_temp(path) or not name.endswith(CLOSED_SUFFIX) or ".replaying-" in name:
            continue
        try:
            header, _ = read_spool(path)
        except FileNotFoundError:  # claimed by another replayer since the listing
            continue
        if uri is not None and header.get("uri") != uri:
            continue
        if name.endswith(OPEN_SUFFIX) and not _writer_gone(header):
            continue
        mine = path.with_name(f"{header.get('token', path.stem)}.replaying-{os.getpid()}")
        try:
            os.replace(path, mine)
        except FileNotFoundError:  # another replayer was faster
            continue
        header, ops = read_spool(mine)
        yield mine, header, ops


def release(claimed: Path, header: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """Put back what a replay could not send (as a closed spool file)."""
    closed = claimed.with_name(f"{header.get('token', uuid.uuid4().hex)}{CLOSED_SUFFIX}")
    write_text_atomic(closed, "\n".join(json.dumps(x) for x in [header, *ops]) + "\n")
    claimed.unlink(missing_ok=True)


def finish(claimed: Path, header: dict[str, Any]) -> None:
    """A claimed file was replayed completely: remove it and its artifact copies."""
    claimed.unlink(missing_ok=True)
    token = header.get("token")
    if token:
        shutil.rmtree(claimed.parent / token, ignore_errors=True)


def transient(exc: BaseException) -> bool:
    """A failure worth retrying: the store is away or busy (connection refused, time-out, HTTP 5xx, a locked
    sqlite file). A request MLflow refused as invalid is not."""
    return getattr(exc, "error_code", None) not in PERMANENT_CODES


@contextlib.contextmanager
def own_http_retries(timeout: float) -> Iterator[None]:
    """Switch off MLflow's own HTTP retries (7 with back-off: minutes of blocking per call) inside the block.

    Args:
        timeout: seconds one HTTP request may take.
    """
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout)))}
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def replay(folder: str | Path, uri: str | None, sender: Callable[[dict], Callable[[dict], None]], quiet: bool) -> dict:
    """Replay every ready spool file in ``folder`` (see ``claim``) in order; what fails is put back.

    Args:
        folder: the spool folder.
        uri: only files for this tracking URI (None: all).
        sender: header -> a function sending one operation of that run.
        quiet: stop at the first failure instead of raising it.

    Returns:
        Counts: ``runs`` replayed completely, ``ops`` sent, ``left`` operations put back.
    """
    counts = {"runs": 0, "ops": 0, "left": 0}
    for claimed, header, ops in claim(folder, uri):
        send, sent = sender(header), 0
        try:
            with own_http_retries(30.0):
                for op in ops:
                    send(op)
                    sent += 1
        except Exception as exc:
            release(claimed, header, ops[sent:])
            counts["ops"] += sent
            counts["left"] += len(ops) - sent
            if quiet:
                return counts
            from benchmark.errors import TrackingError

            raise TrackingError(f"{claimed.parent}: replay to {header.get('uri')} stopped ({exc})") from None
        finish(claimed, header)
        counts["runs"] += 1
        counts["ops"] += sent
    return counts
