"""Job processes that log metric curves and artifacts through ``MLflowTracker`` (run by the reliability tests).

``python tracking_jobs.py plan.json`` forks one process per entry of ``plan["jobs"]`` (mlflow is imported once,
before the fork) and writes ``plan["out"]``: per job its run id, the outages its tracker saw (wall-clock start
and end) and how long it took. A job entry:

- ``name``, ``steps``, ``metrics`` (names logged every step), ``artifact_every`` (0: none), ``patience``;
- ``wait_at``/``wait_for``: at that step, touch ``<name>.waiting`` and wait until that file exists (the test
  signals the outage);
- ``kill_at``: SIGKILL itself right after logging that many steps (a job killed during an outage).

Every step logs each metric with value ``step + 0.001 * i``; artifacts are small text files logged at the steps
that are multiples of ``artifact_every``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.tracking.tracker import MLflowTracker  # noqa: E402


def run_job(plan: dict, job: dict) -> dict:
    t0 = time.time()
    work = Path(plan["work"]) / job["name"]
    work.mkdir(parents=True, exist_ok=True)
    tracker = MLflowTracker(
        plan["uri"], plan["experiment_id"], job["name"], {"kind": "reliability", "job_key": job["name"]},
        flush_every=int(job.get("flush_every", 20)), patience=float(job.get("patience", 120)),
        retries=int(job.get("retries", 6)), spool_dir=plan["spool"],
    )  # fmt: skip
    tracker.log_params({"steps": job["steps"], "name": job["name"]})
    every = int(job.get("artifact_every", 0))
    for step in range(job["steps"]):
        if step == job.get("wait_at"):
            (work.parent / f"{job['name']}.waiting").touch()
            while not Path(job["wait_for"]).exists():
                time.sleep(0.1)
        if step == job.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)
        tracker.log_metrics({m: step + 0.001 * i for i, m in enumerate(job["metrics"])}, step=step)
        if every and step % every == 0:
            path = work / f"step{step:04d}.txt"
            path.write_text(f"{job['name']} step {step}\n")
            tracker.log_artifact(path, "curves")
        if job.get("pace"):
            time.sleep(float(job["pace"]))
    tracker.end("FINISHED")
    return {"name": job["name"], "run_id": tracker.run_id, "outages": tracker.outages,
            "seconds": time.time() - t0, "pending": tracker.pending}  # fmt: skip


def _child(plan: dict, job: dict, out: str) -> None:
    result = run_job(plan, job)
    Path(out).write_text(json.dumps(result))


def _warm_imports(uri: str) -> None:
    """Import what a tracker loads lazily, once, before the fork (no request: connections are never shared)."""
    import mlflow.entities  # noqa: F401
    import mlflow.store.artifact.artifact_repository_registry  # noqa: F401
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri)


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    _warm_imports(plan["uri"])
    ctx = mp.get_context("fork")
    procs = []
    for job in plan["jobs"]:
        out = str(Path(plan["work"]) / f"{job['name']}.result.json")
        p = ctx.Process(target=_child, args=(plan, job, out))
        p.start()
        procs.append((job, p, out))
    results = []
    for job, p, out in procs:
        p.join()
        res = json.loads(Path(out).read_text()) if Path(out).is_file() else {"name": job["name"]}
        results.append({**res, "exitcode": p.exitcode})
    Path(plan["out"]).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
