"""``python launchers/sweep.py --splits 5``: the whole study as one job graph.

The driver prepares the data, writes ``splits.json`` once and the composite maps of every scope, creates the
MLflow experiment and the sweep's parent run, then dispatches: generator jobs (train + sample the training
label maps of every split they serve), segmentation jobs (one per split x seed x arm), image-quality jobs
(after their generator and the split's real-only segmenter). Jobs whose MLflow run already FINISHED with the
same config hash are skipped, so re-running a sweep only runs what is missing or failed; interrupted jobs
resume from their checkpoints. At the end the analysis runs and a summary table is printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from benchmark.config import ClusterConfig, StudyConfig, build_section, load_config, read_yaml, to_dict
from benchmark.errors import ConfigError
from benchmark.generators import GENERATORS
from benchmark.run.dispatch import JobNode, Outcome, dispatch
from benchmark.run.job import JobRunner, JobSpec, job_hash, run_name
from benchmark.segmentation.arms import expand_arms, parse_arm

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The sweep's flags and ``key=value`` overrides, in any order (``--splits 2 name=x --dry-run seeds=[0]``).

    Args:
        argv: the command line without the program name.
    """
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=None, help="number of repeated patient-wise splits")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="study YAML (default: configs/default.yaml)")
    p.add_argument("--generators", default=None, help=f"comma list from: {', '.join(GENERATORS)}")
    p.add_argument("--seeds", default=None, help="comma list of seeds, e.g. 0,1,2")
    p.add_argument("--executor", default=None, help="debug | pool | local | slurm")
    p.add_argument("--cluster", default=None, help="cluster YAML, e.g. configs/cluster/slurm_v100.yaml")
    p.add_argument("--data", default=None, help="dataset folder (with --dataset-kind)")
    p.add_argument("--dataset-kind", default=None, help="phantom | la2018 | msd | lascarqs | nnunet")
    p.add_argument("--tracking-uri", default=None, help="MLflow server, e.g. http://127.0.0.1:5000")
    p.add_argument("--protocol", default=None, help="per_split | disjoint_pool | shared")
    p.add_argument("--dry-run", action="store_true", help="print the job graph and exit")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, before or after the flags")
    return p.parse_intermixed_args(argv)


def resolve_config(args: argparse.Namespace) -> tuple[StudyConfig, list[str]]:
    """Config file + flags + key=value overrides -> StudyConfig, and the generators to run.

    Args:
        args: ``parse_args``' result; flags are applied after the overrides, so a flag wins over ``key=value``.
    """
    ov = list(args.overrides)
    if args.splits is not None:
        if args.splits < 1:
            raise ConfigError(f"--splits: must be at least 1, got {args.splits}")
        ov.append(f"splits.n_splits={args.splits}")
    if args.seeds:
        ov.append(f"seeds=[{args.seeds}]")
    if args.executor:
        ov.append(f"cluster.executor={args.executor}")
    if args.data:
        ov.append(f"data.root={args.data}")
    if args.dataset_kind:
        ov.append(f"data.kind={args.dataset_kind}")
    if args.tracking_uri:
        ov.append(f"tracking.uri={args.tracking_uri}")
    if args.protocol:
        ov.append(f"splits.protocol={args.protocol}")
    cfg = load_config(args.config, ov)
    if args.cluster:
        cluster = build_section(ClusterConfig, read_yaml(args.cluster), "cluster")
        if args.executor:
            cluster.executor = cfg.cluster.executor
        cfg.cluster = cluster
    gens = [g.strip() for g in (args.generators or ",".join(GENERATORS)).split(",") if g.strip()]
    unknown = [g for g in gens if g not in GENERATORS]
    if unknown:
        raise ConfigError(f"--generators: unknown {unknown}; choices: {', '.join(GENERATORS)}")
    return cfg, gens


def build_graph(cfg: StudyConfig, gens: list[str], n_splits: int, scope_of) -> list[tuple[str, str, dict, tuple]]:
    """The study's jobs as (key, kind, params, deps), before skip checks.

    Args:
        cfg: the study config.
        gens: generators to run.
        n_splits: number of splits.
        scope_of: split index -> generator scope (``Study.scope``).
    """
    jobs: list[tuple[str, str, dict, tuple]] = []
    arms = expand_arms(cfg.segmentation.arms, gens)
    for seed in cfg.seeds:
        scopes = sorted({scope_of(s) for s in range(n_splits)})
        for scope in scopes:
            for gen in gens:
                p = {"generator": gen, "scope": scope, "seed": seed}
                jobs.append((run_name("generator", p), "generator", p, ()))
        for split in range(n_splits):
            real_key = None
            for arm in arms:
                for ratio in _ratios(cfg, arm):
                    p = {"split": split, "seed": seed, "arm": arm, "ratio": ratio}
                    gen = parse_arm(arm)[1]
                    deps = (
                        (run_name("generator", {"generator": gen, "scope": scope_of(split), "seed": seed}),)
                        if gen
                        else ()
                    )
                    key = run_name("segmentation", p)
                    real_key = key if arm == "real" else real_key
                    jobs.append((key, "segmentation", p, deps))
            for gen in gens:
                p = {"generator": gen, "split": split, "seed": seed}
                deps = (run_name("generator", {"generator": gen, "scope": scope_of(split), "seed": seed}),)
                deps += (real_key,) if real_key else ()
                jobs.append((run_name("quality", p), "quality", p, deps))
    return jobs


def _ratios(cfg: StudyConfig, arm: str) -> tuple[float, ...]:
    return tuple(cfg.segmentation.ratios) if arm != "real" else (1.0,)


def main(argv: list[str]) -> int:
    """Run (or dry-run) a sweep; returns the exit code (1 when any job failed)."""
    from benchmark.run import job as J
    from benchmark.study import prepare_study
    from benchmark.tracking.tracker import check_reachable, default_uri, ensure_experiment, replay_spool

    args = parse_args(argv)
    if not logging.getLogger().handlers:  # in-process jobs stay quiet; job logs of other executors keep INFO
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg, gens = resolve_config(args)
    t0 = time.time()
    uri = cfg.tracking.uri or default_uri(cfg.study_dir)
    if cfg.tracking.enabled:
        check_reachable(uri)  # before anything is prepared or submitted
    study = prepare_study(cfg)
    graph = build_graph(cfg, gens, len(study.plan.splits), study.scope)
    if args.dry_run:
        counts: dict[str, int] = {}
        for _, kind, _, _ in graph:
            counts[kind] = counts.get(kind, 0) + 1
        print(f"study {cfg.name}: {len(graph)} jobs " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        for key, _, _, deps in graph:
            print(f"  {key}" + (f"  <- {', '.join(deps)}" if deps else ""))
        return 0
    exp_id = parent = None
    if cfg.tracking.enabled:
        exp_id = ensure_experiment(uri, cfg.tracking.experiment or cfg.name, study.root / "mlartifacts")
        replay_spool(study.root / "tracking-spool", uri, quiet=True)  # left over from an earlier outage
        parent = J.start_parent_run(uri, exp_id, study, gens)
    nodes, skipped = [], 0
    for key, kind, params, deps in graph:
        spec = JobSpec(
            kind=kind,
            key=key,
            params=params,
            config=to_dict(cfg),
            tracking_uri=uri if cfg.tracking.enabled else None,
            experiment_id=exp_id,
            parent_run_id=parent.run_id if parent else None,
            cfg_hash=job_hash(cfg, kind, params),
        )
        if J.already_done(spec, study):
            skipped += 1
            nodes.append(JobNode(key, kind, None, (), deps))
        else:
            nodes.append(JobNode(key, kind, JobRunner(), (spec,), deps))
    print(
        f"study {cfg.name}: {len(nodes)} jobs ({skipped} already finished), executor={cfg.cluster.executor}, "
        f"protocol={cfg.splits.protocol}",
        flush=True,
    )
    outcomes = dispatch(nodes, cfg.cluster, Path(cfg.cluster.folder or study.root / "submitit"), on_outcome=_progress)
    failed = [o for o in outcomes.values() if o.status != "done"]
    report = J.finish_sweep(study, parent, outcomes, time.time() - t0)
    print(f"MLflow store: {uri}  (UI: launchers/mlflow_ui.sh {study.root})")
    if report:
        print(f"report: {report}")
    if failed:
        print(f"{len(failed)} job(s) did not finish:", file=sys.stderr)
        for o in failed:
            first = o.error.strip().splitlines()[-1] if o.error.strip() else ""
            print(f"  {o.key}: {o.status}: {first}", file=sys.stderr)
        return 1
    return 0


def _progress(out: Outcome) -> None:
    mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped"}[out.status]
    print(f"[{mark:>7}] {out.key} ({out.seconds:.1f}s)", flush=True)
