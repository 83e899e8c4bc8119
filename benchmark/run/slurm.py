"""Slurm: submit a whole job graph at once with dependencies, read job states, cancel, all through submitit.

A study lives on the cluster, not in a driver process: every job is submitted with
``--dependency=afterok:<ids of the jobs it reads>`` and ``--kill-on-invalid-dep=yes`` (a job whose dependency
failed is cancelled by Slurm instead of pending forever), jobs of one kind with the same dependencies go as one
job array, and each submission is recorded in the study state (``benchmark.run.state``) before the next one, so a
refused ``sbatch`` or a killed driver loses nothing: the next run continues from the records.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import ClusterConfig
from benchmark.errors import BenchmarkError

log = logging.getLogger(__name__)

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "PREEMPTED"}
RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "STAGE_OUT", "SIGNALING"}
FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


class SubmissionError(BenchmarkError):
    """``sbatch`` refused a submission after every retry (the message is Slurm's)."""


@dataclass(frozen=True)
class SlurmState:
    """A job's state as Slurm reports it: ``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ... and reason."""

    state: str
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in QUEUED or self.state in RUNNING


def job_name(study: str, kind: str) -> str:
    """``lge-<study>-<kind>``: a study's jobs are told apart from another study's in ``squeue``."""
    return f"lge-{study}-{kind}"


def slurm_executor(
    cfg: ClusterConfig, kind: str, folder: str | Path, study: str, after: list[str], after_type: str = "afterok"
) -> Any:
    """A submitit Slurm executor for one kind of job of one study.

    Args:
        cfg: the cluster section (``resources.<kind>`` over its own keys; site set-up, gres, env, ...).
        kind: the job kind.
        folder: where submitit writes pickles and logs.
        study: the study name (in the job name).
        after: Slurm ids the jobs wait for (empty: none).
        after_type: ``afterok`` (start once they succeeded) or ``afterany`` (once they ended, however).
    """
    import submitit

    res = cfg.for_kind(kind)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=cfg.max_requeues)
    extra: dict[str, Any] = {k.replace("_", "-"): v for k, v in cfg.sbatch.items()}
    extra |= {k: v for k, v in (("gres", cfg.gres), ("reservation", cfg.reservation)) if v}
    if cfg.exclusive:
        extra["exclusive"] = True
    if after:
        extra |= {"dependency": f"{after_type}:" + ":".join(after), "kill-on-invalid-dep": "yes"}
    setup = list(cfg.setup) + [f"export {k}={shlex.quote(v)}" for k, v in sorted(cfg.env.items())]
    params: dict[str, Any] = {
        "name": job_name(study, kind),
        "timeout_min": res.timeout_min,
        "nodes": res.nodes,
        "tasks_per_node": res.tasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "gpus_per_node": (res.gpus_per_node or None) if not cfg.gres else None,
        "mem_gb": res.mem_gb,
        "slurm_partition": res.partition,
        "slurm_account": cfg.account,
        "slurm_constraint": res.constraint,
        "slurm_qos": res.qos,
        "slurm_array_parallelism": cfg.array_parallelism,
        "slurm_signal_delay_s": cfg.signal_delay_s,
        "slurm_setup": setup or None,
        "slurm_additional_parameters": extra or None,
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit_group(ex: Any, calls: list[tuple[Callable[..., Any], tuple]], cfg: ClusterConfig) -> list[Any]:
    """Submit calls as one job (one call) or one job array, retrying a refused ``sbatch`` with back-off.

    Args:
        ex: the executor (``slurm_executor``).
        calls: (callable, args) per job.
        cfg: ``submit_retries`` and ``submit_backoff_s``.

    Raises:
        SubmissionError: still refused after the retries, with Slurm's message.
    """
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    wait = cfg.submit_backoff_s
    for attempt in range(cfg.submit_retries + 1):
        try:
            if len(calls) == 1:
                return [ex.submit(calls[0][0], *calls[0][1])]
            with ex.batch():
                jobs = [ex.submit(fn, *args) for fn, args in calls]
            return jobs
        except (FailedJobError, FailedSubmissionError, OSError) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            if attempt == cfg.submit_retries:
                tries = cfg.submit_retries + 1
                what = f"{len(calls)} job(s), {tries} time(s)"
                raise SubmissionError(f"submission refused by sbatch, {what}: {why}") from None
            log.warning("submission refused by sbatch (%s); trying again in %.1f s", why, wait)
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


_RANGE = re.compile(r"^(\d+)_\[([0-9,\-%]+)\]$")


def expand_ids(job_id: str) -> list[str]:
    """Slurm's collapsed array notation as single ids: ``6_[0-2,5]`` -> ``6_0, 6_1, 6_2, 6_5``."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", cmd[0], exc)
        return ""


def query_states(job_ids: list[str]) -> dict[str, SlurmState]:
    """Every job's state: ``squeue`` for jobs Slurm still holds, ``sacct`` for the rest (ids Slurm has forgotten
    are absent from the result).

    Args:
        job_ids: Slurm ids (``123`` or ``123_4``).
    """
    if not job_ids:
        return {}
    joined = ",".join(sorted({i.split("_")[0] for i in job_ids}))
    out: dict[str, SlurmState] = {}
    for line in _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", joined]).splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        for one in expand_ids(jid.strip()):
            out[one] = SlurmState(state.split()[0] if state.strip() else "UNKNOWN", reason.strip())
    for line in _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", joined]).splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        for one in expand_ids(jid.strip()):
            out[one] = SlurmState(state.strip(), reason.strip())
    return {j: out[j] for j in job_ids if j in out}


def cancel(job_ids: list[str], folder: str | Path) -> None:
    """Cancel exactly these jobs (array tasks by their own id), through submitit.

    Args:
        job_ids: Slurm ids.
        folder: the study's submitit folder.
    """
    import submitit

    for job_id in sorted(set(job_ids)):
        submitit.SlurmJob(folder=folder, job_id=job_id).cancel(check=False)
