"""The tracking server goes down mid-study and comes back: nothing the jobs logged is lost.

A real ``mlflow server`` is started through ``launchers/mlflow_ui.sh`` (its defaults: 127.0.0.1, sqlite store).
Three job processes log metric curves and artifacts through ``MLflowTracker``; once every job is mid-curve the
test stops the server and starts it again on the same port. Meanwhile the jobs keep logging:

- ``steady`` logs the rest of its curve during the outage and ends while the server is still away: its ``end``
  waits (with back-off) until the server is back and sends the queue;
- ``impatient`` ends during the outage with almost no patience: its queue is left in the local fallback store
  (a closed spool file) and replayed later;
- ``killed`` is SIGKILLed during the outage: what it had flushed is in its open spool file, replayed later.

Afterwards every metric point and every artifact is counted in the server's store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import free_port, listening, start_ui, stop, wait_healthy

from benchmark.tracking.tracker import ensure_experiment, replay_spool

JOBS = Path(__file__).with_name("tracking_jobs.py")
METRICS = ["loss", "dice"]


def _plan(tmp: Path, uri: str, exp: str) -> dict:
    down = str(tmp / "server-down")
    common = {"metrics": METRICS, "artifact_every": 10, "flush_every": 20, "wait_at": 20, "wait_for": down,
              "pace": 0.05}  # fmt: skip
    jobs = [
        {"name": "steady", "steps": 60, "patience": 240, **common},
        {"name": "impatient", "steps": 40, "patience": 0.5, "retries": 0, **common},
        {"name": "killed", "steps": 40, "kill_at": 30, **common},
    ]
    return {"uri": uri, "experiment_id": exp, "spool": str(tmp / "spool"), "work": str(tmp / "work"),
            "out": str(tmp / "results.json"), "jobs": jobs}  # fmt: skip


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, f"job processes exited early ({proc.returncode}): {proc.stdout.read()}"
        assert time.monotonic() - t0 < timeout, f"jobs did not reach the outage point: {paths}"
        time.sleep(0.1)


@pytest.mark.slow
def test_tracking_server_down_and_back_loses_nothing(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    study = tmp_path / "study"
    study.mkdir()
    MlflowClient(f"sqlite:///{study / 'mlflow.db'}").search_experiments()  # creates the store's tables
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = start_ui(study, port, tmp_path, log)
    jobs = None
    try:
        first_start = wait_healthy(server, url, log)
        assert listening(port) == [f"127.0.0.1:{port}"]  # the UI script binds loopback only by default
        exp = ensure_experiment(url, "outage")
        plan = _plan(tmp_path, url, exp)
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        jobs = subprocess.Popen([sys.executable, str(JOBS), str(tmp_path / "plan.json")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        work = Path(plan["work"])
        _wait_for([work / f"{j['name']}.waiting" for j in plan["jobs"]], jobs, timeout=120)

        stop(server)  # the outage
        t_down = time.time()
        assert listening(port) == []
        (tmp_path / "server-down").touch()
        server = start_ui(study, port, tmp_path, log)
        restart = wait_healthy(server, url, log)
        t_up = time.time()

        out, _ = jobs.communicate(timeout=300)
        results = {r["name"]: r for r in json.loads(Path(plan["out"]).read_text())}
        replayed = replay_spool(plan["spool"], url)
        counts = _count(url, exp)
    finally:
        if jobs is not None and jobs.poll() is None:
            jobs.kill()
        stop(server)

    steady, impatient, killed = results["steady"], results["impatient"], results["killed"]
    assert steady["exitcode"] == 0 and impatient["exitcode"] == 0, out
    assert killed["exitcode"] == -9
    assert impatient["pending"] > 0  # it ended with the server away and left its queue to the spool
    assert steady["pending"] == 0 and len(steady["outages"]) == 1
    recovery = steady["outages"][0][1] - t_up
    expected = {"steady": (60, 6, "FINISHED"), "impatient": (40, 4, "FINISHED"), "killed": (30, 3, "RUNNING")}
    for name, (steps, artifacts, status) in expected.items():
        got = counts[name]
        assert got["status"] == status, name
        for m in METRICS:
            assert got["steps"][m] == list(range(steps)), (name, m)
        assert got["artifacts"] == [f"curves/step{s:04d}.txt" for s in range(0, steps, 10)][:artifacts], name
    assert not list(Path(plan["spool"]).glob("*.jsonl")), "spool files left after replay"
    logged = sum(len(v) for c in counts.values() for v in c["steps"].values())
    print(f"\n[tracking outage] server down {t_up - t_down:.1f} s (first start {first_start:.1f} s, restart "
          f"{restart:.1f} s); metric points logged and found {logged}/{sum(e[0] for e in expected.values()) * 2}, "
          f"artifacts {sum(len(c['artifacts']) for c in counts.values())}/13; steady job's queue sent "
          f"{recovery:.1f} s after the server answered; replayed later: {replayed}")  # fmt: skip


def _count(url: str, exp: str) -> dict[str, dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    out = {}
    for run in client.search_runs([exp]):
        rid = run.info.run_id
        steps = {m: sorted(p.step for p in client.get_metric_history(rid, m)) for m in METRICS}
        arts = sorted(a.path for a in client.list_artifacts(rid, "curves"))
        out[run.info.run_name] = {"status": run.info.status, "steps": steps, "artifacts": arts}
    return out
