"""Real jobs through the single-node Slurm test cluster that `slurm/start.sh` runs on 127.0.0.1.

Every test submits through submitit's Slurm executor, so each job goes through `sbatch`, runs under `srun` on the
node, and is tracked through `sacct` (real accounting in slurmdbd). Without the cluster these tests skip, unless
LGE_REQUIRE_SLURM=1 (set in CI), which turns a missing cluster into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[1]

# The job process unpickles these tiny callables; shipping them by value means the job never has to import this
# test module (pytest imports it under a name that depends on its rootdir and import mode).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def executor(cluster: dict[str, str], tmp_path: Path) -> submitit.AutoExecutor:
    # A fresh folder per test: job ids restart at 1 whenever the cluster is restarted.
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(
        slurm_partition=cluster["LGE_SLURM_PARTITION"],
        slurm_account=cluster.get("LGE_SLURM_ACCOUNT"),
        timeout_min=5,
        cpus_per_task=1,
        mem_gb=1,
        # Jobs import the suite from this checkout, whatever folder sbatch was called from.
        slurm_setup=[f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
    )
    return ex


def _result(job: submitit.Job, timeout_s: float = 90.0) -> object:
    """job.result() with a deadline, so a stuck cluster fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"Slurm job {job.job_id} not done after {timeout_s:.0f} s (state {job.state})")
        time.sleep(0.25)
    return job.result()


def _sacct_states(job_id: str, want: str | None = None, wait_s: float = 15.0) -> list[str]:
    """States sacct records for a job (allocation line only, every requeue included)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "--duplicates", "-o", "State"],
            capture_output=True,
            text=True,
            check=True,
        )
        states = [s.split()[0] for s in out.stdout.split("\n") if s.strip()]
        if want is None or want in states or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


# Job functions (run inside Slurm jobs) ---------------------------------------------------------------------------


def _add_in_job(a: int, b: int) -> dict[str, object]:
    import benchmark

    return {
        "sum": a + b,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "python": sys.executable,
        "benchmark": benchmark.__file__,
    }


def _square(x: int) -> int:
    return x * x


def _crash(tag: str) -> None:
    raise ValueError(f"job crashed on purpose ({tag})")


def _counter_run(state_file: Path, total: int, step_s: float, hold_at: int = -1) -> tuple[int, int]:
    """Deterministic loop that saves (step, acc) after every step and resumes from the saved state.

    At step `hold_at` it waits for a `go` file next to the state, so the test can interrupt it mid-run.
    """
    step, acc = json.loads(state_file.read_text()) if state_file.exists() else (0, 0)
    with (state_file.parent / "starts.txt").open("a") as f:
        f.write(f"{step}\n")
    while step < total:
        if step == hold_at:
            deadline = time.monotonic() + 60
            while not (state_file.parent / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        acc = (acc * 31 + step + 7) % 1_000_003
        step += 1
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([step, acc]))
        tmp.replace(state_file)
        time.sleep(step_s)
    return step, acc


class _Counter(submitit.helpers.Checkpointable):
    """Checkpointable job: on preemption submitit requeues the same call, which resumes from the state file."""

    def __call__(self, workdir: str, total: int, step_s: float, hold_at: int) -> tuple[int, int]:
        return _counter_run(Path(workdir) / "state.json", total, step_s, hold_at)


# Tests -------------------------------------------------------------------------------------------------------------


def test_submit_returns_result_through_sbatch(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(_add_in_job, 2, 40)
    out = _result(job)
    assert out["sum"] == 42
    assert out["job_id"] == job.job_id  # it really ran as that Slurm job
    assert out["partition"] == "debug"
    assert Path(str(out["python"])).resolve() == Path(sys.executable).resolve()
    assert Path(str(out["benchmark"])).resolve().is_relative_to(REPO_ROOT)
    assert _sacct_states(job.job_id, want="COMPLETED") == ["COMPLETED"]


def test_job_array_returns_every_result(executor: submitit.AutoExecutor) -> None:
    with executor.batch():
        jobs = [executor.submit(_square, x) for x in (3, 4, 5)]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1  # one sbatch, one array
    assert sorted(job.job_id.split("_")[1] for job in jobs) == ["0", "1", "2"]
    assert [_result(job) for job in jobs] == [9, 16, 25]


def test_crashing_job_is_failed(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(_crash, "tag-17")
    with pytest.raises(FailedJobError, match=r"tag-17"):
        _result(job)
    assert _sacct_states(job.job_id, want="FAILED") == ["FAILED"]


def test_preempted_checkpointable_job_resumes(executor: submitit.AutoExecutor, tmp_path: Path) -> None:
    total, step_s, hold_at = 30, 0.1, 10
    expected = _counter_run(tmp_path / "reference.json", total, 0.0)
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = executor.submit(_Counter(), str(workdir), total, step_s, hold_at)
    state_file = workdir / "state.json"
    deadline = time.monotonic() + 60
    while not (state_file.exists() and json.loads(state_file.read_text())[0] >= hold_at):
        assert time.monotonic() < deadline, f"job {job.job_id} made no progress: {job.state}"
        time.sleep(0.1)
    job._interrupt()  # what a preemption sends: SIGTERM, then submitit's checkpoint signal (USR2)
    (workdir / "go").touch()
    assert _result(job) == expected
    starts = [int(s) for s in (workdir / "starts.txt").read_text().split()]
    assert len(starts) == 2 and starts[0] == 0 and hold_at <= starts[1] < total  # resumed, not restarted
    assert _sacct_states(job.job_id, want="COMPLETED") == ["REQUEUED", "COMPLETED"]
