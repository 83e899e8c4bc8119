"""The sweep's parent MLflow run: opened by the driver, closed with the study's report (by the driver, or on Slurm by
the study's report job)."""

from __future__ import annotations

from pathlib import Path

from benchmark.config import flatten
from benchmark.study import Study, code_version, data_fingerprint
from benchmark.tracking.tracker import Tracker


def start_parent_run(uri: str, experiment_id: str, study: Study, gens: list[str], *, prepared: bool = True) -> Tracker:
    """The sweep's parent run: config, data hash, code version, protocol.

    Args:
        uri / experiment_id: where it goes.
        study: the study.
        gens: the generators it runs.
        prepared: whether the study's data is prepared here; on Slurm it is not (the data preparation is a job, and
            the login node never reads the data): the report job then adds the data hash and the study's files.
    """
    from benchmark.tracking.tracker import MLflowTracker

    cfg = study.cfg
    tags = {
        "kind": "sweep",
        "protocol": cfg.splits.protocol,
        "leaky_protocol": cfg.splits.protocol == "shared",
        "generators": ",".join(gens),
        "git_commit": code_version(),
        "executor": cfg.cluster.executor,
        **(data_fingerprint(study) if prepared else {}),
    }
    tracker = MLflowTracker(uri, experiment_id, f"sweep/{cfg.name}", tags, spool_dir=study.root / "tracking-spool")
    tracker.log_params(flatten(cfg))
    log_study_files(tracker, study)
    return tracker


def log_study_files(tracker: Tracker, study: Study) -> None:
    """The study's ``config.yaml`` and ``splits.json`` as artifacts of ``tracker``'s run, where they exist yet (on
    Slurm the data preparation is a job: the report job logs them at the end)."""
    for path in (study.root / "config.yaml", study.splits_path):
        if path.is_file():
            tracker.log_artifact(path)


def finish_sweep(study: Study, parent: Tracker | None, outcomes: dict, seconds: float) -> Path | None:
    """Analysis after the jobs: summary table on stdout, report file, parent run closed."""
    from benchmark.analysis.collect import summarise_study
    from benchmark.tracking.tracker import replay_spool

    report = None
    if parent is not None:  # what jobs could not send while the server was away
        replay_spool(study.root / "tracking-spool", getattr(parent, "uri", None), quiet=True)
        parent.set_tags(data_fingerprint(study))
    try:
        report = summarise_study(study, outcomes)
        if parent is not None and report is not None:
            parent.log_artifact(report)
    finally:
        if parent is not None:
            failed = [k for k, o in outcomes.items() if o.status != "done"]
            parent.log_metrics({"sweep_seconds": seconds, "jobs": len(outcomes), "jobs_failed": len(failed)})
            parent.end("FAILED" if failed else "FINISHED", error=", ".join(failed)[:4000] or None)
    return report
