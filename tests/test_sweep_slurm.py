"""A tiny sweep through real sbatch on the loopback Slurm cluster, and a preempted job that resumes.

Needs the cluster from slurm/start.sh (CI starts it and sets LGE_REQUIRE_SLURM=1; elsewhere these skip).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config, to_dict
from benchmark.run.dispatch import make_executor
from benchmark.run.job import JobRunner, JobSpec, execute, job_hash, run_name
from benchmark.run.sweep import main
from benchmark.study import prepare_study
from benchmark.tracking.tracker import default_uri, ensure_experiment

pytestmark = pytest.mark.slurm


def _slurm_overrides(cluster: dict[str, str], root: Path) -> list[str]:
    return [
        "cluster.executor=slurm",
        f"cluster.partition={cluster['LGE_SLURM_PARTITION']}",
        f"cluster.account={cluster.get('LGE_SLURM_ACCOUNT', 'lge')}",
        "cluster.timeout_min=5",
        "cluster.array_parallelism=2",
        "cluster.cpus_per_task=1",
        "cluster.mem_gb=2",
        f"cluster.folder={root / 'submitit'}",
    ]


def _sacct_jobs(folder: Path, wait_s: float = 60.0) -> list[str]:
    """Accounting lines (id|name|state) of the jobs submitted from ``folder``, once none is still running."""
    ids = sorted({p.name.split("_")[0] for p in folder.glob("*_log.out")})
    deadline = time.monotonic() + wait_s
    lines: list[str] = []
    while ids:
        cmd = ["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State", "-j", ",".join(ids)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        # the driver sees a job's result before slurmdbd has recorded the job's end
        busy = [line for line in lines if line.endswith(("RUNNING", "COMPLETING", "PENDING"))]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return lines


def test_tiny_sweep_through_sbatch(cluster, tmp_path, capsys):
    args = [
        "--generators",
        "pix2pix3d",
        *tiny_study_overrides(tmp_path, n_splits=1),
        *_slurm_overrides(cluster, tmp_path),
        "segmentation.arms=[real,real+augmented,real+pix2pix3d]",
        "cluster.poll_s=1",
        "--follow",  # submit, then wait for the study as it runs on the cluster
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert "[     ok] report" in capsys.readouterr().out
    jobs = _sacct_jobs(tmp_path / "submitit")
    # data preparation, generator, 3 segmentation arms (real, real+augmented, real+pix2pix3d), quality and the
    # report: every one through sbatch
    assert len(jobs) >= 7, jobs
    assert all(line.endswith("COMPLETED") for line in jobs), jobs
    kinds = ("prepare", "generator", "segmentation", "quality", "report")
    assert {line.split("|")[1] for line in jobs} == {f"lge-tiny-{k}" for k in kinds}
    client = MlflowClient(default_uri(tmp_path / "tiny"))
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    assert len(children) == 5 and all(r.info.status == "FINISHED" for r in children)


def _seg_spec(root: Path, name: str, steps: int) -> tuple[JobSpec, Path]:
    # no periodic checkpoint before the end (checkpoint_every > steps): a resume can only come from the one written
    # at the signal; every step is logged, so the tracked loss curve shows which steps each attempt trained
    train = ["train.checkpoint_every=100000", "train.keep_checkpoints=0", "train.log_every=1"]
    cfg = load_config(None, [*tiny_study_overrides(root, name=name, n_splits=1), f"segmentation.steps={steps}", *train])
    study = prepare_study(cfg)
    uri = default_uri(study.root)
    exp = ensure_experiment(uri, name, study.root / "mlartifacts")
    params = {"split": 0, "seed": 0, "arm": "real", "ratio": 1.0}
    spec = JobSpec(
        kind="segmentation",
        key=run_name("segmentation", params),
        params=params,
        config=to_dict(cfg),
        tracking_uri=uri,
        experiment_id=exp,
        parent_run_id=None,
        cfg_hash=job_hash(cfg, "segmentation", params),
    )
    return spec, study.seg_dir(0, 0, "real")


def _wait_for_step(log_glob: Path, job, step: int, timeout_s: float = 180.0) -> int:
    """Wait until the job's log shows training at ``step`` or later; return the step seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = "\n".join(p.read_text(errors="replace") for p in log_glob.parent.glob(log_glob.name))
        seen = [int(m) for m in re.findall(r"segmentation (\d+)/\d+ ", text)]
        if seen and max(seen) >= step:
            return max(seen)
        assert time.monotonic() < deadline and not job.done(), f"no step {step} before the job ended ({job.state})"
        time.sleep(0.05)


def _loss_curve(spec: JobSpec, status: str) -> dict[int, float]:
    client = MlflowClient(spec.tracking_uri)
    runs = [r for r in client.search_runs([spec.experiment_id]) if r.info.status == status]
    assert len(runs) == 1, [r.info.status for r in client.search_runs([spec.experiment_id])]
    return {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "segmentation/loss")}


def test_preempted_job_resumes_from_checkpoint_with_identical_results(cluster, tmp_path):
    steps = 400
    spec, out = _seg_spec(tmp_path, "preempted", steps)
    cfg = load_config(None, [*tiny_study_overrides(tmp_path), *_slurm_overrides(cluster, tmp_path)]).cluster
    job = make_executor(cfg, tmp_path / "submitit").submit(JobRunner(), spec)
    logs = tmp_path / "submitit" / f"{job.job_id}*_log.err"
    seen = _wait_for_step(logs, job, 20)  # well into training, far from its end and from any periodic checkpoint
    job._interrupt()  # SIGTERM, then submitit's USR2: the engine checkpoints, then submitit requeues
    deadline = time.monotonic() + 240
    while not job.done():
        assert time.monotonic() < deadline, f"requeued job not done ({job.state})"
        time.sleep(0.5)
    summary = job.result()
    assert summary["key"] == spec.key

    # the interrupted attempt trained steps 1..k (its tracked curve, flushed when submitit closed it as KILLED);
    # the checkpoint written at the signal holds exactly k steps and the requeued attempt went on from it
    statuses = sorted(r.info.status for r in MlflowClient(spec.tracking_uri).search_runs([spec.experiment_id]))
    assert statuses == ["FINISHED", "KILLED"]  # the interrupted attempt is closed, the requeued one finished
    killed, finished = _loss_curve(spec, "KILLED"), _loss_curve(spec, "FINISHED")
    k = max(killed)
    assert sorted(killed) == list(range(1, k + 1)) and seen <= k < steps
    assert sorted(finished) == list(range(k + 1, steps + 1))  # no step lost, none trained twice
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"ckpt-{k:09d}", f"ckpt-{steps:09d}"]
    log = "\n".join(p.read_text() for p in logs.parent.glob(logs.name))
    assert f"SIGUSR2 received: stopped after stage 'segmentation' step {k} " in log, log[-2000:]
    assert f"resumed from {out / 'checkpoints' / f'ckpt-{k:09d}'} (stage 0, step {k})" in log, log[-2000:]

    reference, ref_out = _seg_spec(tmp_path, "uninterrupted", steps)
    execute(reference)
    rows = [pd.read_csv(d / "per_case.csv").drop(columns="study") for d in (out, ref_out)]  # study: the names differ
    pd.testing.assert_frame_equal(*rows)
    assert {**killed, **finished} == _loss_curve(reference, "FINISHED")  # bit-identical losses at every step
    weights = [torch.load(d / "segmenter.pt", weights_only=True)["state_dict"] for d in (out, ref_out)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])
