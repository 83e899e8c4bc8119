"""The sweep end to end on a tiny study: job graph, MLflow parent/child runs and tags, idempotent re-runs,
failures that do not stop independent jobs, and flags that are refused before anything runs."""

from __future__ import annotations

import json
import socket
import time

import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark import results
from benchmark.errors import ConfigError, TrackingError
from benchmark.run.sweep import main

EXPECTED_TAGS = {"kind", "job_key", "config_hash", "git_commit", "protocol", "seed", "data_manifest"}


def _runs(root, name):
    client = MlflowClient(f"sqlite:///{root / name / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    args = ["--generators", "pix2pix3d,spade_ldm", *tiny_study_overrides(root)]
    t0 = time.time()
    code = main(args)
    return root, args, code, time.time() - t0


def test_sweep_runs_every_job_and_tracks_it(study, capsys):
    root, _, code, _ = study
    assert code == 0
    client, runs = _runs(root, "tiny")
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    assert len(parents) == 1
    # 2 generators trained once on the pool; 2 splits x (real, real+augmented, real+real_extra, 2 generator arms);
    # 2 x 2 quality jobs
    stages = sorted(r.data.tags["kind"] for r in children)
    assert stages.count("generator") == 2 and stages.count("segmentation") == 10 and stages.count("quality") == 4
    for r in children:
        assert r.info.status == "FINISHED", r.info.run_name
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert set(r.data.tags) >= EXPECTED_TAGS, r.info.run_name
        assert r.data.tags["protocol"] == "disjoint_pool"
    names = {r.info.run_name for r in children}
    assert "seg/split1/seed0/real+spade_ldm" in names and "gen/pool/pix2pix3d/seed0" in names
    quality = [r for r in children if r.data.tags["kind"] == "quality"]
    assert all(r.data.tags["backbone"] == "random_resnet10_seed0" for r in quality)
    assert all("fid" in r.data.metrics for r in quality)
    seg = [r for r in children if r.data.tags["kind"] == "segmentation"]
    assert all("mean_dice" in r.data.metrics for r in seg)
    assert (root / "tiny" / "report.html").is_file()
    assert parents[0].info.status == "FINISHED"


def test_leakage_free_synthetic_arms(study):
    root = study[0] / "tiny"
    plan = json.loads((root / "splits.json").read_text())
    for k, split in enumerate(plan["splits"]):
        samples = json.loads((root / f"samples/split{k}/spade_ldm/seed0/samples.json").read_text())
        assert {s["case_id"] for s in samples["samples"]} == set(split["train_cases"])
        assert set(samples["train_case_ids"]) == set(plan["pool_cases"])
        assert not set(samples["train_case_ids"]) & set(split["test_cases"])
        arm = json.loads((root / f"segmentation/split{k}/seed0/real+spade_ldm/arm.json").read_text())
        assert arm["n_real"] == len(split["train_cases"]) and arm["n_synthetic"] == len(split["train_cases"])
        oracle = json.loads((root / f"segmentation/split{k}/seed0/real+real_extra/arm.json").read_text())
        assert oracle["n_real_extra"] == len(split["train_cases"]) == sum(oracle["extra_draws"].values())
        assert set(oracle["sources"]["real_extra"]) <= set(plan["pool_cases"])


def test_rows_carry_their_job_and_the_fid_note_is_said_once(study):
    root = study[0] / "tiny"
    seg = results.read_per_case(sorted(root.glob("segmentation/split*/seed*/*/per_case.csv")))
    qual = results.read_per_case(sorted(root.glob("quality/split*/*/seed*/per_case.csv")))
    assert set(seg.study) == set(qual.study) == {"tiny"}
    jobs = {(k, g) for k in (0, 1) for g in ("pix2pix3d", "spade_ldm")}
    assert set(zip(qual.split, qual.generator, strict=True)) == jobs
    arms = {"real", "real+augmented", "real+real_extra", "real+pix2pix3d", "real+spade_ldm"}
    assert set(seg.arm) == arms and qual.arm.isna().all()
    sets = results.read_summaries(sorted(root.glob("quality/split*/*/seed*/summary.json")))
    assert (sets[sets.metric == "fid"].note.str.contains("rank-deficient")).all()
    # said once in the report (a Notes line), never once per job
    assert (root / "report.html").read_text().count("rank-deficient") == 1


def test_second_run_skips_everything(study, capsys):
    root, args, _, first = study
    _, before = _runs(root, "tiny")
    t0 = time.time()
    assert main(args) == 0
    again = time.time() - t0
    out = capsys.readouterr().out
    assert "16 jobs (16 already finished)" in out
    _, after = _runs(root, "tiny")
    assert len(after) == len(before)  # a re-run that runs nothing adds no run, not even a parent run
    assert again < first / 2


def test_dry_run_prints_the_graph(tmp_path, capsys):
    assert main(["--dry-run", "--generators", "pix2pix3d", *tiny_study_overrides(tmp_path, n_splits=3)]) == 0
    out = capsys.readouterr().out
    assert "16 jobs generator=1, segmentation=12, quality=3" in out
    assert not (tmp_path / "tiny" / "mlflow.db").exists()


def test_failed_job_is_marked_and_independent_jobs_continue(tmp_path, capsys):
    # spade_gan with 5 levels cannot fit a 32x32x16 volume: its generator job fails at build time
    args = [
        "--generators",
        "pix2pix3d,spade_gan",
        *tiny_study_overrides(tmp_path, n_splits=1),
        "generators.spade_gan.channels=[4,4,4,4,4,4]",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "gen/pool/spade_gan/seed0: failed" in err
    assert "seg/split0/seed0/real+spade_gan: skipped" in err
    client, runs = _runs(tmp_path, "tiny")
    by_name = {r.info.run_name: r for r in runs}
    failed = by_name["gen/pool/spade_gan/seed0"]
    assert failed.info.status == "FAILED" and "generators.spade_gan" in failed.data.tags["error"]
    assert by_name["seg/split0/seed0/real+pix2pix3d"].info.status == "FINISHED"
    assert by_name["sweep/tiny"].info.status == "FAILED"


@pytest.mark.parametrize(
    "flags, error, pattern",
    [
        (["--executor", "kubernetes"], ConfigError, r"cluster\.executor: 'kubernetes' is not one of"),
        (
            ["--generators", "pix2pix3d,stylegan"],
            ConfigError,
            r"--generators: generator 'stylegan' is unknown; choices: labels2image, pix2pix3d",
        ),
        (["--splits", "0"], ConfigError, r"--splits: must be at least 1"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(tmp_path, flags, error, pattern):
    with pytest.raises(error, match=pattern):
        main([*flags, *tiny_study_overrides(tmp_path)])
    assert not (tmp_path / "tiny").exists()


def test_unreachable_tracking_server_fails_before_any_job(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match="unreachable"):
        main(["--tracking-uri", f"http://127.0.0.1:{port}", *tiny_study_overrides(tmp_path)])
    assert not (tmp_path / "tiny").exists()
