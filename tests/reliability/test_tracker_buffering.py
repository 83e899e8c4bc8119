"""``MLflowTracker`` under injected store failures (fast, sqlite store): it queues instead of blocking, keeps a
local fallback copy, sends everything once the store answers again, replays what a run left behind, and refuses
requests the store rejects as invalid at once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.errors import TrackingError
from benchmark.tracking import spool as tracking_spool
from benchmark.tracking.tracker import MLflowTracker, default_uri, ensure_experiment, replay_spool


@pytest.fixture()
def store(tmp_path):
    uri = default_uri(tmp_path)
    return uri, ensure_experiment(uri, "buffering", tmp_path / "mlartifacts"), tmp_path / "spool"


class Outage:
    """Makes a tracker's client fail like an absent server until ``up()``."""

    def __init__(self, tracker: MLflowTracker, monkeypatch):
        self.down, self.calls = True, 0
        for name in ("log_batch", "log_artifact", "set_terminated", "set_tag"):
            real = getattr(tracker.client, name)
            monkeypatch.setattr(tracker.client, name, self._wrap(real))

    def _wrap(self, real):
        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise MlflowException("API request to http://127.0.0.1:1/api failed with exception ConnectionError")
            return real(*args, **kwargs)

        return call

    def up(self) -> None:
        self.down = False


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_outage_is_queued_spooled_and_sent_when_back(store, monkeypatch, tmp_path):
    uri, exp, spool = store
    tracker = MLflowTracker(uri, exp, "job", flush_every=10, spool_dir=spool, max_delay=0.2)
    outage = Outage(tracker, monkeypatch)
    art = tmp_path / "curve.txt"
    art.write_text("v1")
    t0 = time.monotonic()
    for step in range(50):
        tracker.log_metrics({"loss": float(step)}, step=step)
        if step == 20:
            tracker.log_artifact(art)
    assert time.monotonic() - t0 < 5  # the job was never held up by the absent store
    assert tracker.pending == 6  # 5 metric batches and 1 artifact
    files = list(spool.glob("*.open.jsonl"))
    assert len(files) == 1
    header, ops = tracking_spool.read_spool(files[0])
    assert header["run_id"] == tracker.run_id and len(ops) == 6
    art.write_text("changed after logging")  # the spooled copy is what gets sent
    outage.up()
    time.sleep(0.3)
    tracker.end("FINISHED")
    assert tracker.pending == 0 and len(tracker.outages) == 1
    assert _steps(uri, tracker.run_id, "loss") == list(range(50))
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    local = client.download_artifacts(tracker.run_id, "curve.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "v1"
    assert not list(spool.rglob("*.jsonl")) and not any(p.is_file() for p in spool.rglob("*"))


def test_run_ended_during_outage_is_replayed_later(store, monkeypatch):
    uri, exp, spool = store
    tracker = MLflowTracker(uri, exp, "job", flush_every=5, spool_dir=spool, retries=0, patience=0.0)
    Outage(tracker, monkeypatch)
    for step in range(12):
        tracker.log_metrics({"loss": float(step), "dice": step / 12}, step=step)
    tracker.end("FINISHED")  # gives up at once: the queue goes to a closed spool file
    closed = list(spool.glob("*.jsonl"))
    assert len(closed) == 1 and not closed[0].name.endswith(".open.jsonl")
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "RUNNING"
    counts = replay_spool(spool, uri)
    assert counts == {"runs": 1, "ops": 5, "left": 0}  # 4 batches of 6 points (flushed at >= 5) and the end
    assert _steps(uri, tracker.run_id, "dice") == list(range(12))
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FINISHED"
    assert replay_spool(spool, uri) == {"runs": 0, "ops": 0, "left": 0}  # replaying twice sends nothing more


def test_spool_of_a_killed_writer_is_replayed_and_a_torn_line_dropped(store, tmp_path):
    uri, exp, spool = store
    run_id = MlflowClient(uri).create_run(exp).info.run_id
    sp = tracking_spool.Spool(spool, {"uri": uri, "run_id": run_id})
    sp.append([{"op": "batch", "metrics": [["loss", 0.5, 1000, 3]]}])
    with open(sp.path, "a") as fh:
        fh.write('{"op": "batch", "metr')  # the writer died mid-line
    live = list(tracking_spool.claim(spool, uri))
    assert live == []  # its writer (this process) is alive: not replayed
    header = json.loads(sp.path.read_text().splitlines()[0])
    header["pid"] = 2**22 + 12345  # a pid that does not exist
    lines = sp.path.read_text().splitlines()
    sp.path.write_text("\n".join([json.dumps(header), *lines[1:]]))
    assert replay_spool(spool, uri) == {"runs": 1, "ops": 1, "left": 0}
    assert _steps(uri, run_id, "loss") == [3]


def test_store_rejecting_a_request_is_an_error_at_once(store, monkeypatch):
    uri, exp, spool = store
    tracker = MLflowTracker(uri, exp, "job", spool_dir=spool)
    tracker.log_params({"lr": 0.1})
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match=r"refused batch for run .*lr"):
        tracker.log_params({"lr": 0.2})  # MLflow refuses changing a logged param
    assert time.monotonic() - t0 < 5
    tracker.end("FAILED", error="TrackingError")  # the refused batch does not block closing the run
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FAILED"


def test_lost_create_answer_does_not_make_a_twin_run(store, monkeypatch):
    uri, exp, spool = store
    real = MlflowClient.create_run
    calls = []

    def create_then_lose_answer(self, *args, **kwargs):
        run = real(self, *args, **kwargs)
        calls.append(run.info.run_id)
        if len(calls) == 1:
            raise MlflowException("API request failed with exception ReadTimeout")
        return run

    monkeypatch.setattr(MlflowClient, "create_run", create_then_lose_answer)
    tracker = MLflowTracker(uri, exp, "job", spool_dir=spool)
    assert len(calls) == 1 and tracker.run_id == calls[0]
    assert len(MlflowClient(uri).search_runs([exp])) == 1


def test_mlflow_own_http_retries_are_off_only_inside_tracker_calls(store, monkeypatch):
    uri, exp, spool = store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    seen = []
    tracker = MLflowTracker(uri, exp, "job", spool_dir=spool)
    real = tracker.client.log_batch

    def log_batch(*args, **kwargs):
        seen.append(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", log_batch)
    tracker.set_tags({"a": 1})
    assert seen == ["0"] and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


def test_claim_skips_a_spool_file_still_being_written(store):
    """Another replayer's ``release`` writes under a hidden temp name that ends like a closed spool file."""
    uri, _, spool = store
    spool.mkdir(parents=True, exist_ok=True)
    in_progress = spool / ".tok.tmp-1-abcd1234.jsonl"
    in_progress.write_text(json.dumps({"uri": uri, "run_id": "r", "token": "tok"}) + "\n")
    assert list(tracking_spool.claim(spool, uri)) == [] and in_progress.is_file()
