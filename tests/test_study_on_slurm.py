"""A study that lives on the loopback Slurm cluster: submitted whole and left there, re-attached, cancelled,
submitted through a refusing sbatch. Needs the cluster from slurm/start.sh (CI starts it; elsewhere these skip)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark.run.state import StudyState
from benchmark.run.status import study_status
from benchmark.run.sweep import main
from benchmark.tracking.tracker import default_uri

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
ARMS = "segmentation.arms=[real,real+augmented,real+pix2pix3d]"  # 7 jobs: prepare, generator, 3 arms, quality, report
SWEEP = [sys.executable, str(REPO / "launchers" / "sweep.py")]


def _args(cluster: dict[str, str], root: Path, name: str = "tiny") -> list[str]:
    return [
        "--generators",
        "pix2pix3d",
        *tiny_study_overrides(root, name=name, n_splits=1),
        ARMS,
        "cluster.executor=slurm",
        f"cluster.partition={cluster['LGE_SLURM_PARTITION']}",
        f"cluster.account={cluster.get('LGE_SLURM_ACCOUNT', 'lge')}",
        "cluster.timeout_min=5",
        "cluster.array_parallelism=2",
        "cluster.mem_gb=2",
        "cluster.poll_s=1",
        "cluster.submit_backoff_s=0.2",
        f"cluster.folder={root / name / 'submitit'}",
    ]


def _wait_done(root: Path, limit_s: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + limit_s
    while True:
        statuses = {s.key: s.status for s in study_status(root)}
        if statuses and not any(v in ("queued", "running") for v in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(2)


def _per_case(root: Path) -> pd.DataFrame:
    files = sorted(root.glob("segmentation/split*/seed*/*/per_case.csv")) + sorted(root.glob("quality/**/per_case.csv"))
    frame = pd.concat([pd.read_csv(f).assign(file=str(f.relative_to(root))) for f in files], ignore_index=True)
    return frame.drop(columns=["study"]).sort_values(["file", "case_id", "metric"]).reset_index(drop=True)


def _squeue(name_prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%j|%E"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if line.startswith(name_prefix)]


def test_detached_study_finishes_on_its_own_and_a_killed_follower_loses_nothing(cluster, tmp_path, capsys):
    root = tmp_path / "tiny"
    args = _args(cluster, tmp_path)
    assert main(args) == 0  # --detach is the default on Slurm
    out = capsys.readouterr().out
    assert "7 jobs on Slurm: 7 submitted" in out and "you may log out" in out
    queue = _squeue("lge-tiny-")
    assert any(line.startswith("lge-tiny-quality|") and "afterok:" in line for line in queue), queue
    assert any(line.startswith("lge-tiny-report|") and "afterany:" in line for line in queue), queue
    # the driver returned with the study on the cluster: the report job still waits for every other job
    assert {s.key: s.status for s in study_status(root)}["report"] == "queued"

    # a following driver attaches; killed mid-study, the same command attaches again and submits nothing twice
    follower = subprocess.Popen([*SWEEP, *args, "--follow"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    time.sleep(8)
    follower.send_signal(signal.SIGKILL)
    follower.wait(30)
    again = subprocess.run([*SWEEP, *args, "--follow"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _wait_done(root) == dict.fromkeys(StudyState(root).load(), "done")

    records = StudyState(root).load()
    assert all(r.attempt == 1 for r in records.values())
    ids = [r.job_id for r in records.values()]
    assert len(set(ids)) == len(ids) == 7  # one Slurm job per job key, none submitted twice
    client = MlflowClient(default_uri(root))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    assert sorted(r.info.run_name for r in children) == sorted(k for k in records if k not in ("prepare", "report"))
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["slurm_job_id"] for r in children} == {records[r.info.run_name].job_id for r in children}
    status = subprocess.run([*SWEEP, *args, "--status"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "segmentation done 3" in status.stdout and "FAILED" not in status.stdout, status.stdout

    # the same study in this process gives the same per-case results
    debug_root = tmp_path / "debug"
    ref = ["--generators", "pix2pix3d", *tiny_study_overrides(debug_root, n_splits=1), ARMS, "cluster.executor=debug"]
    assert main(ref) == 0
    pd.testing.assert_frame_equal(_per_case(root), _per_case(debug_root / "tiny"))


def test_cancel_removes_exactly_this_studys_jobs(cluster, tmp_path, capsys):
    a, b = _args(cluster, tmp_path, "study_a"), _args(cluster, tmp_path, "study_b")
    assert main(a) == 0 and main(b) == 0
    assert _squeue("lge-study_a-") and _squeue("lge-study_b-")
    assert main([*a, "--cancel"]) == 0
    assert "cancelled 7 queued or running Slurm job(s)" in capsys.readouterr().out
    deadline = time.monotonic() + 60
    while _squeue("lge-study_a-") and time.monotonic() < deadline:
        time.sleep(1)
    assert _squeue("lge-study_a-") == []
    assert len(_squeue("lge-study_b-")) >= 5  # the other study's jobs are untouched
    assert main([*b, "--cancel"]) == 0


def _refusing_sbatch(folder: Path, refuse: str) -> dict[str, str]:
    """An ``sbatch`` on PATH that refuses as told (``twice``: the first two calls; a job name: every job of that
    name), then runs the real one."""
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True).stdout.strip()
    folder.mkdir()
    script = folder / "sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f'count="{folder}/calls"; n=$(( $(cat "$count" 2>/dev/null || echo 0) + 1 )); echo $n > "$count"\n'
        f'if [ "{refuse}" = twice ] && [ $n -le 2 ]; then\n'
        '  echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi\n'
        f'if [ "{refuse}" != twice ] && grep -q -- "--job-name={refuse}" "$1"; then\n'
        '  echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_a_refused_sbatch_is_retried_and_a_permanent_refusal_continues_on_a_rerun(cluster, tmp_path):
    args = _args(cluster, tmp_path, "retry")
    env = _refusing_sbatch(tmp_path / "bin_twice", "twice")
    proc = subprocess.run([*SWEEP, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("submission refused by sbatch") == 2 and "QOSMaxSubmitJobPerUserLimit" in proc.stderr
    assert len(StudyState(tmp_path / "retry").load()) == 7
    subprocess.run([*SWEEP, *args, "--cancel"], cwd=REPO, capture_output=True, timeout=120)

    args = _args(cluster, tmp_path, "refused")
    env = _refusing_sbatch(tmp_path / "bin_quality", "lge-refused-quality")
    proc = subprocess.run([*SWEEP, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: submission refused by sbatch, 1 job(s), 5 time(s): ")
    assert "Invalid partition name specified" in last
    before = StudyState(tmp_path / "refused").load()
    assert sorted(r.kind for r in before.values()) == ["generator", "prepare", "segmentation"] + ["segmentation"] * 2
    proc = subprocess.run([*SWEEP, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = StudyState(tmp_path / "refused").load()
    assert {k: r.job_id for k, r in after.items() if k in before} == {k: r.job_id for k, r in before.items()}
    assert sorted(set(after) - set(before)) == ["quality/split0/pix2pix3d/seed0", "report"]
    subprocess.run([*SWEEP, *args, "--cancel"], cwd=REPO, capture_output=True, timeout=120)
