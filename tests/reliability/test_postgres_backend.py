"""A production tracking backend: ``mlflow server`` on a real PostgreSQL, 16 job processes logging at once.

The test starts a private PostgreSQL cluster (Debian's packages: ``bash scripts/install_postgres.sh``) in a temp
folder on 127.0.0.1 and a free port, puts an MLflow server on it, runs 16 concurrent job processes that log
metric curves and an artifact through ``MLflowTracker``, then counts every step of every run, over MLflow's API
and directly in PostgreSQL's ``metrics`` table. Without PostgreSQL the test skips; with ``LGE_REQUIRE_POSTGRES=1``
(as in CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import Postgres, free_port, listening, postgres_bindir, start_mlflow, stop, wait_healthy

from benchmark.tracking.tracker import ensure_experiment

JOBS = Path(__file__).with_name("tracking_jobs.py")
N_JOBS, STEPS, METRICS = 16, 50, ["loss", "dice", "lr"]


def _require_postgres() -> Path:
    bindir = postgres_bindir()
    problem = None
    if bindir is None:
        problem = "PostgreSQL server binaries not found (bash scripts/install_postgres.sh)"
    else:
        try:
            import psycopg2  # noqa: F401  (the MLflow server's PostgreSQL driver, in the [dev] extras)
        except ImportError:
            problem = "psycopg2 is not installed (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("LGE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LGE_REQUIRE_POSTGRES=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return bindir


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """PostgreSQL + ``mlflow server`` on it, both on 127.0.0.1."""
    bindir = _require_postgres()
    tmp = tmp_path_factory.mktemp("pg_mlflow")
    pg = Postgres(bindir)
    server = None
    try:
        backend = pg.start()
        port = free_port()
        log = tmp / "server.log"
        server = start_mlflow(backend, port, tmp, log)
        url = f"http://127.0.0.1:{port}"
        startup = wait_healthy(server, url, log, timeout=240)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NO_PROXY", "127.0.0.1,localhost")
            yield {"url": url, "pg": pg, "tmp": tmp, "startup": startup, "port": port}
    finally:
        if server is not None:
            stop(server)
        pg.stop()


@pytest.mark.slow
def test_servers_bind_loopback_only(pg_server):
    assert listening(pg_server["port"]) == [f"127.0.0.1:{pg_server['port']}"]
    assert listening(pg_server["pg"].port) == [f"127.0.0.1:{pg_server['pg'].port}"]


@pytest.mark.slow
def test_sixteen_concurrent_jobs_lose_no_step(pg_server):
    from mlflow.tracking import MlflowClient

    url, tmp, pg = pg_server["url"], pg_server["tmp"], pg_server["pg"]
    exp = ensure_experiment(url, "load")
    jobs = [{"name": f"job{i:02d}", "steps": STEPS, "metrics": METRICS, "artifact_every": STEPS, "flush_every": 75,
             "patience": 120} for i in range(N_JOBS)]  # fmt: skip
    plan = {"uri": url, "experiment_id": exp, "spool": str(tmp / "spool"), "work": str(tmp / "work"),
            "out": str(tmp / "results.json"), "jobs": jobs}  # fmt: skip
    (tmp / "plan.json").write_text(json.dumps(plan))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(JOBS), str(tmp / "plan.json")], capture_output=True, text=True,
                          timeout=400)  # fmt: skip
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(Path(plan["out"]).read_text())
    assert [r["exitcode"] for r in results] == [0] * N_JOBS, proc.stderr[-3000:]
    assert all(r["pending"] == 0 for r in results)

    client = MlflowClient(url)
    runs = client.search_runs([exp], max_results=100)
    assert sorted(r.info.run_name for r in runs) == [j["name"] for j in jobs]
    found = 0
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        for m in METRICS:
            history = client.get_metric_history(run.info.run_id, m)
            assert sorted(p.step for p in history) == list(range(STEPS)), (run.info.run_name, m)
            assert all(p.value == p.step + 0.001 * METRICS.index(m) for p in history)
            found += len(history)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "curves")] == ["curves/step0000.txt"]
    in_db = int(pg.query("SELECT count(*) FROM metrics"))
    expected = N_JOBS * STEPS * len(METRICS)
    assert found == expected and in_db == expected
    outages = sum(len(r["outages"]) for r in results)
    print(f"\n[postgres backend] {N_JOBS} concurrent jobs, {expected} metric points logged, {found} found over "
          f"the API, {in_db} rows in PostgreSQL; {N_JOBS} artifacts; jobs took {seconds:.1f} s; "
          f"tracker outages seen: {outages}; server start {pg_server['startup']:.1f} s")  # fmt: skip
