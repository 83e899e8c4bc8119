"""How a sweep's driver treats the machine it runs on and the other drivers of its study."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark.errors import ConfigError, DataError
from benchmark.run.sweep import main
from benchmark.tracking.tracker import default_uri

REPO = Path(__file__).resolve().parents[1]


def test_paper_config_on_a_cluster_without_gpus_is_refused_with_the_flag_to_add(tmp_path):
    with pytest.raises(ConfigError, match=r"cluster gives \w+ jobs no GPU .* add --cluster configs/cluster/"):
        main(["--config", str(REPO / "configs" / "paper.yaml"), f"output_dir={tmp_path}"])
    assert list(tmp_path.iterdir()) == []  # refused before anything was written or submitted


def test_cuda_with_a_local_executor_on_a_machine_without_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=r"device: cuda, but this machine has no usable GPU .* --cluster"):
        main([*tiny_study_overrides(tmp_path), "device=cuda", "cluster.executor=pool"])


def test_dry_run_lists_the_dataset_but_reads_no_voxel_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "la2018"
    for case in ("a01", "a02", "a03"):  # empty files: a voxel read would fail on them
        (data / case).mkdir(parents=True)
        for name in ("lgemri.nrrd", "laendo.nrrd"):
            (data / case / name).write_bytes(b"")
    out_dir = tmp_path / "out"
    args = [*tiny_study_overrides(out_dir), "data.kind=la2018", f"data.root={data}", "data.exclude=[a02]"]
    assert main(["--dry-run", *args]) == 0
    out = capsys.readouterr().out
    assert f"dataset: 2 la2018 scans in {data} (no voxel read)" in out and "study tiny: " in out
    assert not out_dir.exists()  # no cache, no study folder
    with pytest.raises(DataError, match="dataset folder not found"):
        main(["--dry-run", *args[:-2], f"data.root={tmp_path / 'missing'}"])


@pytest.mark.slow
def test_two_pool_drivers_on_one_study_run_every_job_once(tmp_path):
    argv = [*tiny_study_overrides(tmp_path, n_splits=1), "--generators", "pix2pix3d", "cluster.executor=pool"]
    cmd = [sys.executable, str(REPO / "launchers" / "sweep.py"), *argv]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(p.wait(600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    if codes == [0, 0]:  # the second came after the first had finished: it found everything done and ran nothing
        assert any(re.search(r"(\d+) jobs \(\1 already finished\)", out) for _, out, _ in results), results
    else:
        assert codes == [0, 2], [err[-2000:] for _, _, err in results]
        refused = next(err for code, _, err in results if code == 2)
        assert refused.strip().startswith("error: ") and "another driver is running this study (pid " in refused
    client = MlflowClient(default_uri(tmp_path / "tiny"))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    names = [r.info.run_name for r in runs if r.data.tags.get("kind") != "sweep"]
    ran = next(out for code, out, _ in results if code == 0)
    n_jobs = int(re.search(r"study tiny: (\d+) jobs", ran).group(1))
    assert len(names) == len(set(names)) == n_jobs >= 5  # the generator, its arms and quality: each once
    assert all(r.info.status == "FINISHED" for r in runs)
