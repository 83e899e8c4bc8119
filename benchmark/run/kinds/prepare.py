"""The data-preparation job: the dataset cache, ``splits.json``, the composite maps and the robustness study's
shifted datasets, on the cluster.

On Slurm it is the study's first job (every other job waits for it), so the login node never preprocesses data;
in-driver executors prepare in the driver before dispatching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.run.kinds.base import JobKind
from benchmark.study import Study, prepare_study
from benchmark.tracking.tracker import Tracker


def run_prepare(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Prepare the study's data (idempotent: what is cached is reused)."""
    prepared = prepare_study(study.cfg)
    return {"n_cases": len(prepared.manifest.cases), "n_splits": len(prepared.plan.splits)}


KIND = JobKind(
    name="prepare",
    sections=("data", "preprocess", "composite", "splits", "robustness"),  # robustness: its shifted datasets
    run_name=lambda p: "prepare",
    out_dir=lambda study, p: study.root / "state" / "prepare",
    body=run_prepare,
    tracked=False,
)
