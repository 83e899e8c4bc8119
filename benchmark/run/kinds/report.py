"""The report job: the study's analysis once every other job has ended, and the sweep's parent run closed.

On Slurm it waits for every job of the submission (``afterany``), so a detached study writes its report and closes
its MLflow parent run on its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmark.run.kinds.base import JobKind
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker


def run_report(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Collect the study's results into its report; close the parent run named in ``p`` (if any)."""
    from benchmark.run.dispatch import Outcome
    from benchmark.run.parent import finish_sweep, log_study_files
    from benchmark.run.status import study_status

    statuses = [s for s in study_status(study.root) if s.record.kind not in ("report", "prepare")]
    outcomes = {s.key: Outcome(s.key, s.status, error=s.detail) for s in statuses}
    parent = None
    if p.get("parent_run_id") and p.get("tracking_uri"):
        from benchmark.tracking.tracker import MLflowTracker

        parent = MLflowTracker(
            p["tracking_uri"], "", "sweep", run_id=p["parent_run_id"], spool_dir=study.root / "tracking-spool"
        )
        log_study_files(parent, study)
    started = min((s.record.submitted_at for s in statuses), default=0.0)
    report = finish_sweep(study, parent, outcomes, seconds=time.time() - started if started else 0.0)
    failed = sorted(k for k, o in outcomes.items() if o.status != "done")
    return {"report": str(report) if report else None, "jobs": len(outcomes), "not_done": failed}


KIND = JobKind(
    name="report",
    sections=(),
    run_name=lambda p: "report",
    out_dir=lambda study, p: study.root / "state" / "report",
    body=run_report,
    tracked=False,
)
