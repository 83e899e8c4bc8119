"""The MLflow UI addresses a sweep prints (built without mlflow; the browser check is in test_mlflow_ui.py)."""

from __future__ import annotations

import urllib.parse

from benchmark.tracking.links import LOCAL_UI, compare_url, runs_table_url, split_arm_runs, ui_address
from benchmark.tracking.runs import RunRecord, study_ui_lines


def _run(run_id: str, arm: str, split: int = 0, seed: int = 0, status: str = "FINISHED", kind="segmentation"):
    tags = {"kind": kind, "arm": arm, "split": str(split), "seed": str(seed)}
    return RunRecord(run_id, f"seg/split{split}/seed{seed}/{arm}", status, 0, tags)


def test_ui_address_is_the_server_or_the_local_launcher():
    assert ui_address("http://10.0.0.5:5000/") == "http://10.0.0.5:5000"
    assert ui_address("sqlite:////runs/default/mlflow.db") == LOCAL_UI == "http://127.0.0.1:5000"
    assert ui_address("postgresql+psycopg2://u@db/mlflow", "http://127.0.0.1:5123") == "http://127.0.0.1:5123"


def test_runs_table_and_compare_addresses():
    assert runs_table_url("http://h:1/", "7") == (
        "http://h:1/#/experiments/7/runs?orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    )
    url = compare_url("http://h:1", "7", ["a1", "b2"])
    assert url == "http://h:1/#/compare-runs?runs=%5B%22a1%22%2C%22b2%22%5D&experiments=%5B%227%22%5D"
    query = urllib.parse.parse_qs(url.split("?", 1)[1])
    assert query == {"runs": ['["a1","b2"]'], "experiments": ['["7"]']}
    assert compare_url("sqlite:///x.db", "7", ["a1"]) is None


def test_split_arm_runs_takes_the_first_split_newest_finished_run_per_arm_baseline_first():
    runs = [
        _run("old", "real+spade_ldm"),
        _run("gen", "", kind="generator"),
        _run("b", "real+augmented"),
        _run("s1", "real", split=1),
        _run("failed", "real+pix2pix3d", status="FAILED"),
        _run("r", "real"),
        _run("new", "real+spade_ldm"),  # a re-run of the same arm, started later
        _run("seed1", "real", seed=1),
    ]
    assert split_arm_runs(runs) == ("split 0, seed 0", ["r", "b", "new"])
    assert split_arm_runs([_run("x", "real", status="RUNNING")]) == ("", [])


def test_study_ui_lines_from_a_local_store(tmp_path):
    from benchmark.tracking.tracker import MLflowTracker, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "local_study")
    ids = []
    for arm in ("real+x", "real"):
        run = MLflowTracker(uri, exp, f"seg/split0/seed0/{arm}", {"kind": "segmentation", "arm": arm, "split": 0,
                                                                   "seed": 0})  # fmt: skip
        run.end("FINISHED")
        ids.append(run.run_id)
    lines = study_ui_lines(uri, "local_study")
    assert lines == [
        f"MLflow runs table: {runs_table_url(LOCAL_UI, exp)}",
        f"MLflow compare arms (split 0, seed 0): {compare_url(LOCAL_UI, exp, ids[::-1])}",
    ]
    missing = study_ui_lines(uri, "no_such_study")
    assert len(missing) == 1 and missing[0].startswith("MLflow UI links not available:")
    assert "no experiment 'no_such_study'" in missing[0]
