"""Robustness jobs on the loopback Slurm cluster: submitted with the study's graph (after their segmentation job),
through the same dispatch as every job. Needs the cluster from slurm/start.sh (CI starts it; elsewhere this skips)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark import results
from benchmark.run.state import StudyState
from benchmark.run.sweep import main
from benchmark.tracking.tracker import default_uri

pytestmark = pytest.mark.slurm


def test_two_shift_families_run_as_slurm_jobs_after_their_segmenter(cluster, tmp_path, capsys):
    root = tmp_path / "tiny"
    args = [
        "--generators", "labels2image", "--follow", *tiny_study_overrides(tmp_path, n_splits=1),
        "segmentation.arms=[real]", "metrics.metrics=[psnr]", "robustness.enabled=true",
        "robustness.families=[noise,site]", "robustness.severities=[1]", "cluster.executor=slurm",
        f"cluster.partition={cluster['LGE_SLURM_PARTITION']}", f"cluster.folder={root / 'submitit'}",
        f"cluster.account={cluster.get('LGE_SLURM_ACCOUNT', 'lge')}", "cluster.timeout_min=5", "cluster.mem_gb=2",
        "cluster.array_parallelism=2", "cluster.poll_s=1",
    ]  # fmt: skip
    assert main(args) == 0
    # prepare, generator, segmentation, quality, two robustness jobs, report
    assert "7 jobs on Slurm: 7 submitted" in capsys.readouterr().out
    records = StudyState(root).load()
    robust = {k: r for k, r in records.items() if r.kind == "robustness"}
    assert sorted(robust) == ["robust/split0/seed0/real/noise", "robust/split0/seed0/real/site"]
    assert all(r.deps == ["prepare", "seg/split0/seed0/real"] and r.job_id and r.attempt == 1 for r in robust.values())
    rows = results.read_shifted(sorted(root.glob(f"robustness/**/{results.SHIFT_FILE}")))
    assert set(zip(rows["shift"], rows.severity, strict=True)) == {("noise", 1), ("site", 1)}
    client = MlflowClient(default_uri(root))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    tracked = {r.info.run_name: r for r in runs if r.data.tags.get("kind") == "robustness"}
    assert {k: r.data.tags["slurm_job_id"] for k, r in tracked.items()} == {k: r.job_id for k, r in robust.items()}
    assert all(r.info.status == "FINISHED" for r in tracked.values())
