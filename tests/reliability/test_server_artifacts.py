"""Over HTTP a study's artifacts go through the server's artifact proxy: a real ``mlflow server
--artifacts-destination DIR`` keeps a generator job's artifacts (its weights included) in DIR, none land in the
study folder, and ``launchers/sample.py`` reloads the generator from the server by run name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from server_helpers import free_port, start_mlflow, stop, wait_healthy
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config, to_dict
from benchmark.data.io import load_volume, save_nifti
from benchmark.run.cli import main_guard
from benchmark.run.job import JobSpec, execute, job_hash, run_name
from benchmark.run.sample import main as sample_main
from benchmark.study import prepare_study
from benchmark.tracking.tracker import ensure_experiment

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_generator_job_artifacts_land_in_the_server_store_and_reload_by_run_name(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("LGE_TRACKING_SPOOL", str(tmp_path / "spool"))
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    port, log = free_port(), tmp_path / "server.log"
    proc = start_mlflow(f"sqlite:///{server_dir / 'mlflow.db'}", port, server_dir, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log)
        cfg = load_config(REPO / "configs" / "default.yaml", [*tiny_study_overrides(tmp_path / "out"),
                                                               f"tracking.uri={url}"])  # fmt: skip
        study = prepare_study(cfg)
        exp = ensure_experiment(url, cfg.name, study.root / "mlartifacts")  # ignored over HTTP
        params = {"generator": "pix2pix3d", "seed": 0, "scope": study.scope(0)}
        key = run_name("generator", params)
        execute(JobSpec("generator", key, params, to_dict(cfg), url, exp, None, job_hash(cfg, "generator", params)))
        label = study.label_maps(params["scope"], "pix2pix3d")[1][study.plan.generator_train_cases(0)[0]]
        affine = np.diag([1.25, 1.25, 2.5, 1.0])
        save_nifti(tmp_path / "labels" / "new.nii.gz", label.astype(np.uint8), affine)
        out = tmp_path / "synth"
        argv = ["--run", key, "--labels", str(tmp_path / "labels"), "--out", str(out), "--tracking-uri", url]
        rc = main_guard(lambda: sample_main(argv))
    finally:
        stop(proc)
    assert rc == 0, log.read_text()[-2000:]
    stored = sorted(p.relative_to(server_dir / "artifacts") for p in (server_dir / "artifacts").rglob("*.*"))
    assert [p.name for p in stored if p.parent.name == "generator"] == ["generator.yaml", "weights.pt"], stored
    assert not (study.root / "mlartifacts").exists()  # nothing went to the study folder's artifact store
    vol = load_volume(out / "samples" / "new.nii.gz")
    assert vol.array.shape == label.shape and np.allclose(vol.affine, affine)
