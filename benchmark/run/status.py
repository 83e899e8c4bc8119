"""Where a study stands, from its records and the cluster: what ``--status`` prints, ``--follow`` watches and the
study's report job reads. Works from any shell, after a logout, while the driver is gone.

A job is ``done`` when its ``done.json`` carries its config hash (the only proof of success); otherwise its state
comes from Slurm (``queued``, ``running``, ``failed``, ``cancelled``, or ``skipped`` when Slurm cancelled it because a
job it waits for failed) or, for jobs of an in-driver executor, from what the driver recorded (``interrupted`` when
that driver is gone).
"""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmark.run import slurm
from benchmark.run.state import STATE_DIR, JobRecord, StudyState

ORDER = ("done", "running", "queued", "failed", "skipped", "cancelled", "interrupted")


@dataclass(frozen=True)
class JobStatus:
    """One job's standing.

    Args:
        record: what the driver submitted.
        status: one of ``ORDER``.
        detail: Slurm's state and reason, or the recorded error.
    """

    record: JobRecord
    status: str
    detail: str = ""

    @property
    def key(self) -> str:
        return self.record.key

    def last_error(self) -> str:
        """The last non-empty line of the job's error log, else the recorded error."""
        for name in (self.record.stderr, self.record.stdout):
            if name and Path(name).is_file():
                lines = [ln.strip() for ln in Path(name).read_text(errors="replace").splitlines() if ln.strip()]
                if lines:
                    return lines[-1][-300:]
        return self.record.error or self.detail


def _done(rec: JobRecord, out_dir: Path | None) -> bool:
    if out_dir is None:
        return False
    try:
        return json.loads((out_dir / "done.json").read_text()).get("cfg_hash") == rec.cfg_hash
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def driver_alive(root: Path) -> bool:
    """True while some driver holds the study's driver lock."""
    path = root / STATE_DIR / "driver.lock"
    if not path.is_file():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _from_slurm(state: slurm.SlurmState | None) -> tuple[str, str]:
    if state is None:
        return "failed", "unknown to Slurm (purged from its records)"
    detail = f"{state.state} {state.reason}".strip()
    if state.state in slurm.QUEUED:
        return "queued", detail
    if state.state in slurm.RUNNING:
        return "running", detail
    if state.state == "CANCELLED":
        return ("skipped" if "Dependency" in state.reason else "cancelled"), detail
    if state.state == "COMPLETED":
        return "failed", "COMPLETED without done.json (see its log)"
    return "failed", detail


def study_status(root: str | Path, out_dirs: dict[str, Path] | None = None) -> list[JobStatus]:
    """Every recorded job's standing.

    Args:
        root: the study folder.
        out_dirs: job key -> its output folder (default: the folder each record names).

    Returns:
        One ``JobStatus`` per record, in key order.
    """
    root = Path(root)
    records = StudyState(root).load()
    ids = [r.job_id for r in records.values() if r.job_id and r.executor == "slurm"]
    states = slurm.query_states(ids)
    alive = driver_alive(root)
    out: dict[str, JobStatus] = {}
    for key, rec in sorted(records.items()):
        folder = (out_dirs or {}).get(key) or (Path(rec.out) if rec.out else None)
        if _done(rec, folder):
            out[key] = JobStatus(rec, "done")
        elif rec.executor == "slurm":
            out[key] = JobStatus(rec, *_from_slurm(states.get(rec.job_id or "")))
        elif rec.status in ("failed", "skipped"):
            out[key] = JobStatus(rec, rec.status, rec.error)
        else:
            out[key] = JobStatus(rec, ("running" if rec.status == "running" else "queued") if alive else "interrupted")
    # a job cancelled by the user is "cancelled"; one whose dependency ended badly is "skipped"
    for key, st in out.items():
        if st.status == "cancelled" and any(out.get(d) and out[d].status != "done" for d in st.record.deps):
            out[key] = JobStatus(st.record, "skipped", st.detail)
    return list(out.values())


def format_status(name: str, statuses: list[JobStatus]) -> str:
    """The ``--status`` text: counts per kind, then every failed job with its log and last error line."""
    lines = [f"study {name}: {len(statuses)} jobs"]
    first = {}  # kinds in the order the graph submits them
    for s in sorted(statuses, key=lambda s: s.record.submitted_at):
        first.setdefault(s.record.kind, len(first))
    kinds = sorted(first, key=first.get)
    for kind in kinds:
        counts = Counter(s.status for s in statuses if s.record.kind == kind)
        lines.append(f"  {kind:<13}" + "  ".join(f"{st} {counts[st]}" for st in ORDER if counts[st]))
    bad = [s for s in statuses if s.status in ("failed", "interrupted")]
    for s in bad:
        where = s.record.stderr or "(no log)"
        lines.append(f"  {s.status.upper()} {s.key} (attempt {s.record.attempt}, job {s.record.job_id or '-'})")
        lines.append(f"      log: {where}")
        lines.append(f"      {s.last_error()}")
    return "\n".join(lines)
