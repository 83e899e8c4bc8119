"""MLflow tracking on a local sqlite store: parent/child runs, batched curves, status, skip lookup."""

from __future__ import annotations

import socket

import pytest
from mlflow.tracking import MlflowClient

from benchmark.errors import TrackingError
from benchmark.tracking.tracker import (
    MLFLOW_PARENT_TAG,
    MLflowTracker,
    check_reachable,
    default_uri,
    ensure_experiment,
    find_finished_run,
)


@pytest.fixture()
def store(tmp_path):
    uri = default_uri(tmp_path)
    exp = ensure_experiment(uri, "study", tmp_path / "mlartifacts")
    assert ensure_experiment(uri, "study") == exp  # created once, then looked up
    return uri, exp, tmp_path


def test_parent_child_runs_curves_artifacts_and_status(store):
    uri, exp, tmp = store
    parent = MLflowTracker(uri, exp, "sweep/study", {"kind": "sweep"})
    child = MLflowTracker(
        uri,
        exp,
        "seg/split0/seed0/real",
        {"job_key": "seg/split0/seed0/real", "config_hash": "abc"},
        parent.run_id,
        flush_every=50,
    )
    child.log_params({"segmentation.lr": 0.001, "x" * 300: "long key is cut"})
    for step in range(120):
        child.log_metrics({"loss": 1.0 / (step + 1), "dice": step / 120}, step=step)
    (tmp / "per_case.csv").write_text("case_id,metric,value\na,dice,0.9\n")
    child.log_artifact(tmp / "per_case.csv")
    child.end("FINISHED")
    failed = MLflowTracker(
        uri, exp, "seg/split0/seed0/real+augmented", {"job_key": "k2", "config_hash": "abc"}, parent.run_id
    )
    failed.end("FAILED", error="ValueError: boom")
    parent.end("FINISHED")

    client = MlflowClient(uri)
    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[MLFLOW_PARENT_TAG] == parent.run_id
    assert run.info.run_name == "seg/split0/seed0/real"
    assert len(client.get_metric_history(child.run_id, "loss")) == 120  # every step, through batches
    assert [a.path for a in client.list_artifacts(child.run_id)] == ["per_case.csv"]
    bad = client.get_run(failed.run_id)
    assert bad.info.status == "FAILED" and "boom" in bad.data.tags["error"]
    assert find_finished_run(uri, exp, "seg/split0/seed0/real", "abc") == child.run_id
    assert find_finished_run(uri, exp, "seg/split0/seed0/real", "other-hash") is None
    assert find_finished_run(uri, exp, "k2", "abc") is None  # failed runs are re-run


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port} is unreachable"):
        check_reachable(f"http://127.0.0.1:{port}", timeout=2)
    check_reachable("sqlite:///x.db")  # local stores are not probed


def _create_experiment_at_once(uri: str, start, results) -> None:
    start.wait()
    results.put(ensure_experiment(uri, "study"))


def test_processes_creating_one_fresh_store_at_once_all_get_the_experiment(tmp_path):
    """Launchers started by hand on one fresh study: without the store lock most of them crash in MLflow's
    schema creation ("table ... already exists")."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    start, results = ctx.Barrier(3), ctx.Queue()
    uri = default_uri(tmp_path)
    procs = [ctx.Process(target=_create_experiment_at_once, args=(uri, start, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    ids = {results.get(timeout=5) for _ in procs}
    assert ids == {ensure_experiment(uri, "study")}
