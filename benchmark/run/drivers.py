"""The two ways a sweep's driver runs a study.

- ``run_in_driver`` (debug | pool | local): this process prepares the data, dispatches every job and waits; it
  holds the study's driver lock for the whole run, so a second driver on the same study is refused with the first
  one named, and it records every job's status in the study state for ``--status`` from another shell.
- ``run_on_slurm``: the data preparation is the study's first Slurm job; the whole graph is submitted at once
  with dependencies and recorded; then the driver exits (``--detach``, the default) or follows the study
  (``--follow``), and Ctrl-C only detaches. A re-run re-attaches: nothing queued, running or done is submitted again.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmark.config import to_dict
from benchmark.run import job as J
from benchmark.run import slurm
from benchmark.run.dispatch import JobNode, Outcome, dispatch
from benchmark.run.parent import finish_sweep, start_parent_run
from benchmark.run.state import JobRecord, StudyState, driver_lock
from benchmark.run.status import JobStatus, study_status
from benchmark.run.submit import SUBMIT_LOCK_WAIT_S, PlannedJob, plan_jobs, submit_planned, submitit_folder
from benchmark.study import Study
from benchmark.tracking.auth import refuse_credentials_in_config
from benchmark.tracking.runs import study_ui_lines
from benchmark.tracking.tracker import check_reachable, default_uri, ensure_experiment, replay_spool

Graph = list[tuple[str, str, dict, tuple]]


def _specs(study: Study, graph: Graph, uri: str | None, exp_id: str | None) -> list[tuple[J.JobSpec, tuple]]:
    cfg = study.cfg
    return [
        (
            J.JobSpec(
                kind=kind,
                key=key,
                params=params,
                config=to_dict(cfg),
                tracking_uri=uri,
                experiment_id=exp_id,
                parent_run_id=None,
                cfg_hash=J.job_hash(cfg, kind, params),
            ),
            deps,
        )
        for key, kind, params, deps in graph
    ]


def _tracking_uri(study: Study) -> str | None:
    """The tracking URI once the store answers (checked before anything is prepared or submitted); None untracked."""
    cfg = study.cfg
    refuse_credentials_in_config(cfg.cluster.env)  # jobs inherit credentials from the environment, never the config
    if not cfg.tracking.enabled:
        return None
    uri = cfg.tracking.uri or default_uri(cfg.study_dir)
    check_reachable(uri)
    return uri


def _experiment(study: Study, uri: str | None) -> str | None:
    """The study's MLflow experiment (created if new), after replaying what an earlier outage left in the spool."""
    if uri is None:
        return None
    cfg = study.cfg
    exp_id = ensure_experiment(uri, cfg.tracking.experiment or cfg.name, study.root / "mlartifacts")
    replay_spool(study.root / "tracking-spool", uri, quiet=True)  # left over from an earlier outage
    return exp_id


def run_in_driver(study: Study, gens: list[str], graph: Graph) -> int:
    """Prepare, dispatch and wait (debug | pool | local executors); the exit code is 1 when a job failed."""
    from benchmark.study import prepare_study

    cfg, t0 = study.cfg, time.time()
    uri = _tracking_uri(study)
    study = prepare_study(cfg)  # data checks first (idempotent, safe beside another driver: writes are atomic)
    with driver_lock(study.root):
        exp_id = _experiment(study, uri)
        specs = _specs(study, graph, uri, exp_id)
        done = {spec.key for spec, _ in specs if J.already_done(spec, study)}
        parent = None
        if uri is not None and len(done) < len(specs):  # a re-run that runs nothing adds no parent run
            parent = start_parent_run(uri, exp_id, study, gens)
            specs = [(replace(spec, parent_run_id=parent.run_id), deps) for spec, deps in specs]
        state = StudyState(study.root)
        state.update(_local_record(study, spec, deps) for spec, deps in specs if spec.key not in done)
        nodes = [
            JobNode(spec.key, spec.kind, None if spec.key in done else J.JobRunner(), (spec,), deps)
            for spec, deps in specs
        ]
        print(
            f"study {cfg.name}: {len(nodes)} jobs ({len(done)} already finished), executor={cfg.cluster.executor}, "
            f"protocol={cfg.splits.protocol}",
            flush=True,
        )

        def on_outcome(out: Outcome) -> None:
            state.set_status(out.key, out.status, out.error.strip().splitlines()[-1] if out.error.strip() else "")
            _progress(out)

        folder = Path(cfg.cluster.folder or study.root / "submitit")
        outcomes = dispatch(nodes, cfg.cluster, folder, on_outcome=on_outcome)
        report = finish_sweep(study, parent, outcomes, time.time() - t0)
    print(f"MLflow store: {uri}  (UI: launchers/mlflow_ui.sh {study.root})")
    if uri is not None:
        print("\n".join(study_ui_lines(uri, cfg.tracking.experiment or cfg.name)))
    if report:
        print(f"report: {report}")
    failed = [o for o in outcomes.values() if o.status != "done"]
    if failed:
        print(f"{len(failed)} job(s) did not finish:", file=sys.stderr)
        for o in failed:
            first = o.error.strip().splitlines()[-1] if o.error.strip() else ""
            print(f"  {o.key}: {o.status}: {first}", file=sys.stderr)
        return 1
    return 0


def _local_record(study: Study, spec: J.JobSpec, deps: tuple) -> JobRecord:
    return JobRecord(
        key=spec.key,
        kind=spec.kind,
        cfg_hash=spec.cfg_hash,
        executor=study.cfg.cluster.executor,
        status="queued",
        deps=list(deps),
        out=str(J.out_dir(study, spec.kind, spec.params)),
        submitted_at=time.time(),
    )


def _progress(out: Outcome) -> None:
    mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped"}[out.status]
    print(f"[{mark:>7}] {out.key} ({out.seconds:.1f}s)", flush=True)


def _slurm_graph(graph: Graph) -> Graph:
    """The study's graph with the data preparation first and the report last."""
    body = [(key, kind, params, ("prepare", *deps)) for key, kind, params, deps in graph]
    return [("prepare", "prepare", {}, ()), *body, ("report", "report", {}, tuple(k for k, *_ in graph))]


def run_on_slurm(
    study: Study,
    gens: list[str],
    graph: Graph,
    *,
    follow_jobs: bool,
    argv: list[str],
    program: str = "launchers/sweep.py",
) -> int:
    """Submit what is missing of the study (re-attaching to what is queued, running or done), then exit or follow;
    ``program`` and ``argv`` make the command line the hints repeat."""
    cfg = study.cfg
    uri = _tracking_uri(study)
    exp_id = _experiment(study, uri)
    specs = _specs(study, _slurm_graph(graph), uri, exp_id)
    with driver_lock(study.root, wait_s=SUBMIT_LOCK_WAIT_S):  # a second driver waits, then attaches
        state = StudyState(study.root)
        jobs = [PlannedJob(spec, deps, J.out_dir(study, spec.kind, spec.params)) for spec, deps in specs]
        standing = {s.key: s for s in study_status(study.root)}
        records = state.load()
        plan_jobs(jobs[:-1], records, standing, lambda j: J.already_done(j.spec, study))
        report = jobs[-1]
        report.action = _report_action(
            study, report, standing.get("report"), any(j.action == "submit" for j in jobs[:-1])
        )
        if report.action == "submit":
            parent = start_parent_run(uri, exp_id, study, gens, prepared=False) if uri else None
            params = {"parent_run_id": parent.run_id, "tracking_uri": uri} if parent else {}
            report.spec = replace(report.spec, params=params, cfg_hash=J.job_hash(cfg, "report", params))
            report.attempt = records["report"].attempt + 1 if "report" in records else 1
            for j in jobs:
                j.spec = replace(j.spec, parent_run_id=parent.run_id if parent else None)
            submit_planned(jobs, study, submitit_folder(study), state)
    counts = {a: sum(j.action == a for j in jobs) for a in ("submit", "active", "done")}
    print(
        f"study {cfg.name}: {len(jobs)} jobs on Slurm: {counts['submit']} submitted, {counts['active']} already "
        f"queued or running, {counts['done']} done (state: {state.path})"
    )
    kept = [a for a in argv if a not in ("--follow", "--detach")]
    again = " ".join(shlex.quote(a) for a in ["python", program, *kept])
    hint = f"the same command with --status, --follow or --cancel shows, follows or cancels it:\n  {again}"
    if not follow_jobs:
        print(f"the study runs on the cluster; you may log out.\n{hint}")
        return 0
    return _follow(study, hint)


def _report_action(study: Study, report: PlannedJob, standing: JobStatus | None, submitting: bool) -> str:
    """The report job runs again whenever anything else is submitted (an earlier, still pending report is cancelled:
    it would run before the new jobs end); else it is left alone when queued, running or done."""
    active = standing is not None and standing.status in ("queued", "running")
    if submitting:
        if active and standing.record.job_id:
            slurm.cancel([standing.record.job_id], submitit_folder(study))
        return "submit"
    if active:
        report.job_id = standing.record.job_id
        return "active"
    return "done" if (report.out / J.DONE_FILE).is_file() else "submit"


def _follow(study: Study, hint: str) -> int:
    from benchmark.run.submit import follow

    def show(s: JobStatus) -> None:
        mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped", "cancelled": "cancel"}.get(s.status, s.status)
        print(f"[{mark:>7}] {s.key}" + (f"  {s.detail}" if s.status in ("failed", "cancelled") else ""), flush=True)

    try:
        final = follow(study, show, study.cfg.cluster.poll_s)
    except KeyboardInterrupt:
        print(f"\ndetached: the study keeps running on the cluster.\n{hint}", file=sys.stderr)
        return 0
    report = study.root / "report.html"
    if report.is_file():
        print(f"report: {report}")
    bad = [s for s in final if s.status != "done"]
    return 1 if bad else 0
