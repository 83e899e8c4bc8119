"""``python launchers/sweep.py --splits 5``: the whole study as one job graph.

The graph: generator jobs (train + sample the training label maps of every split they serve; after their scope's
real-only segmenter when they train against one), segmentation jobs
(one per split x seed x arm), image-quality jobs (after their generator and the split's real-only segmenter) and,
when ``robustness.enabled``, robustness jobs (one per segmentation job and shift family, after that job).
Jobs whose output is on disk with the same config hash (and whose MLflow run FINISHED) are skipped, so re-running
a sweep only runs what is missing or failed; interrupted jobs resume from their checkpoints. How the graph runs
(in this process's care, or submitted to Slurm and left there) is ``benchmark.run.drivers``; ``--status``,
``--cancel`` and ``--dry-run`` read no data.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmark.config import ClusterConfig, StudyConfig, build_section, load_config, read_yaml
from benchmark.errors import ConfigError
from benchmark.generators import GENERATORS, VARIANTS, check_copies, split_generator_name
from benchmark.profiling.plan_jobs import add_plan_flags, plan_from_args
from benchmark.run.drivers import run_in_driver, run_on_slurm
from benchmark.run.job import run_name
from benchmark.run.kinds import KINDS
from benchmark.run.kinds.generator import job_params as generator_params
from benchmark.run.kinds.robustness import Graph, add_external_flags, robustness_jobs, with_external
from benchmark.run.kinds.scope_segmenter import job_params as segmenter_params
from benchmark.run.submit import cancel_study, status_text
from benchmark.segmentation.arms import expand_arms, named_generators, parse_arm, sample_copies
from benchmark.segmentation.controls import check_protocol
from benchmark.segmentation.fractions import generator_scope as gen_scope
from benchmark.study import Study

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
PROGRAM = "launchers/sweep.py"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The sweep's flags and ``key=value`` overrides, in any order (``--splits 2 name=x --dry-run seeds=[0]``).

    Args:
        argv: the command line without the program name.
    """
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=None, help="number of repeated patient-wise splits")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="study YAML (default: configs/default.yaml)")
    p.add_argument(
        "--generators",
        default=None,
        help=f"comma list from: {', '.join(GENERATORS)}, each optionally @{'|@'.join(VARIANTS)} "
        "(default: those segmentation.arms names, else all)",
    )
    p.add_argument("--seeds", default=None, help="comma list of seeds, e.g. 0,1,2")
    p.add_argument("--data", default=None, help="dataset folder (with --dataset-kind)")
    p.add_argument("--dataset-kind", default=None, help="phantom | la2018 | msd | lascarqs | nnunet")
    p.add_argument("--protocol", default=None, help="per_split | disjoint_pool | shared")
    add_driver_flags(p)
    add_plan_flags(p)
    return p.parse_intermixed_args(argv)


def add_driver_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every launcher that drives a study's jobs (the sweep, ``launchers/robustness.py``): where the
    jobs run and are tracked, the external test set, dry-run / status / cancel / detach / follow, ``key=value``.

    Args:
        p: the launcher's parser.
    """
    p.add_argument("--executor", default=None, help="debug | pool | local | slurm")
    p.add_argument("--cluster", default=None, help="cluster YAML, e.g. configs/cluster/slurm_v100.yaml")
    p.add_argument("--tracking-uri", default=None, help="MLflow server, e.g. http://127.0.0.1:5000")
    add_external_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the job graph and exit (reads no data)")
    p.add_argument("--status", action="store_true", help="where the study stands: done/running/queued/failed/skipped")
    p.add_argument("--cancel", action="store_true", help="cancel this study's queued and running Slurm jobs")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="slurm: submit the study and exit (the default)")
    mode.add_argument("--follow", action="store_true", help="slurm: submit, then wait and print progress")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, before or after the flags")


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
    cfg = with_external(load_config(args.config, ov), args)
    if args.cluster:
        cluster = build_section(ClusterConfig, read_yaml(args.cluster), "cluster")
        if args.executor:
            cluster.executor = cfg.cluster.executor
        cfg.cluster = cluster
    # without --generators: the generators the arms name (configs/controls.yaml), else every registered one
    named = named_generators(cfg.segmentation.arms)
    gens = [g.strip() for g in (args.generators or ",".join(named or GENERATORS)).split(",") if g.strip()]
    copies = sample_copies(cfg.segmentation.ratios)
    for g in gens:  # a registered generator, or one with a conditioning variant (spade_ldm@cavity_only)
        try:
            spec, _ = split_generator_name(g)
        except ConfigError as exc:
            raise ConfigError(f"--generators: {exc}") from None
        check_copies(g, cfg.generators[spec.name], copies)  # ratios above 1: refused before any job runs
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
    check_protocol(arms, cfg.splits.protocol)  # the oracle arm needs a pool: fail before any job runs
    fractions = cfg.segmentation.fractions
    for seed in cfg.seeds:
        scopes = sorted({gen_scope(scope_of(s), f, cfg.splits.protocol) for s in range(n_splits) for f in fractions})
        for scope in scopes:
            made = set()  # a generator with a consistency loss depends on its scope's real-only segmenter
            for gen in gens:
                p = generator_params(cfg, gen, scope, seed)
                if "segmenter" in p and p["segmenter"] not in made:
                    made.add(p["segmenter"])
                    jobs.append((p["segmenter"], "scope_segmenter", segmenter_params(cfg, scope, seed), ()))
                jobs.append((run_name("generator", p), "generator", p, (p["segmenter"],) if "segmenter" in p else ()))
        for split in range(n_splits):
            real_key = None
            for fraction in fractions:  # 1.0 adds no parameter: a study without the axis keeps its keys and hashes
                scope = gen_scope(scope_of(split), fraction, cfg.splits.protocol)
                for arm in arms:
                    for ratio in _ratios(cfg, arm):
                        p = {"split": split, "seed": seed, "arm": arm, "ratio": ratio}
                        p |= {"fraction": fraction} if fraction != 1.0 else {}
                        gen = parse_arm(arm)[1]
                        deps = (run_name("generator", {"generator": gen, "scope": scope, "seed": seed}),) if gen else ()
                        key = run_name("segmentation", p)
                        real_key = key if arm == "real" and fraction == 1.0 else real_key
                        jobs.append((key, "segmentation", p, deps))
            for gen in gens:
                p = {"generator": gen, "split": split, "seed": seed}
                deps = (run_name("generator", {"generator": gen, "scope": scope_of(split), "seed": seed}),)
                deps += (real_key,) if real_key else ()
                jobs.append((run_name("quality", p), "quality", p, deps))
    return jobs + robustness_jobs(cfg, jobs)


def _ratios(cfg: StudyConfig, arm: str) -> tuple[float, ...]:
    return tuple(cfg.segmentation.ratios) if arm != "real" else (1.0,)


def main(argv: list[str]) -> int:
    """Run, submit, dry-run, show or cancel a study; returns the exit code (1 when any job failed)."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:  # in-process jobs stay quiet; job logs of other executors keep INFO
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg, gens = resolve_config(args)
    study = Study(cfg)  # paths only: nothing here reads or prepares data
    if args.status or args.cancel:
        return show_or_cancel(study, args)
    graph = build_graph(cfg, gens, cfg.splits.n_splits, study.scope)
    if args.plan:  # no data read, nothing written into the study folder
        print(plan_from_args(cfg, graph, args))
        return 0
    if args.dry_run:
        _print_graph(cfg, graph)
        return 0
    return drive(study, gens, graph, args, argv)


def show_or_cancel(study: Study, args: argparse.Namespace) -> int:
    """``--status`` (where the study stands) or ``--cancel`` (its queued and running Slurm jobs); reads no data."""
    if args.status:
        print(status_text(study))
        return 0
    return _cancel(study)


def drive(
    study: Study, gens: list[str], graph: Graph, args: argparse.Namespace, argv: list[str], program: str = PROGRAM
) -> int:
    """Run the graph in this driver's care, or submit it to Slurm (``--detach`` / ``--follow``).

    Args:
        study: the study (paths only).
        gens: the study's generators (recorded on the parent run).
        graph: the jobs ``(key, kind, params, deps)``.
        args: the flags of :func:`add_driver_flags`.
        argv: the command line, repeated in the Slurm hints with ``program``.
        program: the launcher's path.

    Returns:
        The exit code: 1 when any job failed.
    """
    cfg = study.cfg
    check_devices(cfg)
    if cfg.cluster.executor == "slurm":
        return run_on_slurm(study, gens, graph, follow_jobs=args.follow, argv=argv, program=program)
    if args.detach:
        raise ConfigError(f"--detach: the {cfg.cluster.executor} executor runs jobs in this process's care; use slurm")
    return run_in_driver(study, gens, graph)


def _print_graph(cfg: StudyConfig, graph: list[tuple[str, str, dict, tuple]]) -> None:
    if cfg.data.kind != "phantom":  # the dataset's files are listed, never read
        from benchmark.data.adapters import list_cases

        print(f"dataset: {len(list_cases(cfg.data))} {cfg.data.kind} scans in {cfg.data.root} (no voxel read)")
    counts: dict[str, int] = {}
    for _, kind, _, _ in graph:
        counts[kind] = counts.get(kind, 0) + 1
    print(f"study {cfg.name}: {len(graph)} jobs " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for key, _, _, deps in graph:
        print(f"  {key}" + (f"  <- {', '.join(deps)}" if deps else ""))


def _cancel(study: Study) -> int:
    keys = cancel_study(study)
    print(f"study {study.cfg.name}: cancelled {len(keys)} queued or running Slurm job(s)")
    for key in keys:
        print(f"  {key}")
    return 0


def check_devices(cfg: StudyConfig) -> None:
    """No silent CPU: ``device: cuda`` needs a GPU where the training jobs run.

    In-driver executors run here, so this machine needs one; on Slurm every training kind's resources must give
    one (``cluster.gpus_per_node``, ``cluster.resources.<kind>`` or ``cluster.gres``).
    """
    if cfg.device != "cuda":
        return
    if cfg.cluster.executor != "slurm":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: cuda, but this machine has no usable GPU and the {cfg.cluster.executor} executor runs "
                "jobs here; add --cluster configs/cluster/slurm_v100.yaml (or another cluster YAML) to run on "
                "GPU nodes, or device=cpu to run on this CPU"
            )
        return
    for kind in KINDS.values():
        if kind.trains and not cfg.cluster.gres and not cfg.cluster.for_kind(kind.name).gpus_per_node:
            raise ConfigError(
                f"device: cuda, but the cluster gives {kind.name} jobs no GPU (cluster.gpus_per_node / "
                f"cluster.resources.{kind.name}.gpus_per_node is 0); add --cluster configs/cluster/slurm_v100.yaml "
                "or set the GPUs for this kind"
            )
