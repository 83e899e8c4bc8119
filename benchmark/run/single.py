"""One job of a study run by hand (the launchers ``train_generator.py`` and ``train_segmenter.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmark.config import load_config, to_dict
from benchmark.run.job import JobSpec, execute, job_hash, launcher_rank, run_name
from benchmark.study import prepare_study
from benchmark.tracking.tracker import check_reachable, default_uri, ensure_experiment

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def common_args(p: argparse.ArgumentParser) -> None:
    """Add the flags every single-job launcher shares, and the ``key=value`` overrides.

    Args:
        p: the launcher's parser; parse it with ``parse_intermixed_args`` so that overrides may come before,
            between or after the flags.
    """
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="study YAML (default: configs/default.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--tracking-uri", default=None, help="MLflow server, e.g. http://127.0.0.1:5000")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, before or after the flags")


def run_one(args: argparse.Namespace, kind: str, params: dict) -> int:
    """Prepare the study (data, splits, composite maps) and run one job in this process.

    Args:
        args: the launcher's parsed command line (``common_args`` flags and overrides).
        kind: the job kind, ``generator``, ``segmentation`` or ``scope_segmenter``.
        params: the job's parameters (generator or arm, seed, split, ...).

    Returns:
        The exit code (0).
    """
    ov = list(args.overrides) + ([f"tracking.uri={args.tracking_uri}"] if args.tracking_uri else [])
    cfg = load_config(args.config, ov)
    uri = cfg.tracking.uri or default_uri(cfg.study_dir)
    tracked = cfg.tracking.enabled and launcher_rank() == 0  # the other ranks of a torchrun job log nothing
    if tracked:
        check_reachable(uri)
    study = prepare_study(cfg)
    if args.split >= len(study.plan.splits):
        from benchmark.errors import ConfigError

        raise ConfigError(f"--split: {args.split} is out of range (the study has {len(study.plan.splits)} splits)")
    if kind == "generator":
        from benchmark.run.kinds.generator import job_params

        params = job_params(cfg, params["generator"], study.scope(args.split), params["seed"])
    elif kind == "scope_segmenter":  # the real-only segmenter of the generator scope serving --split
        from benchmark.run.kinds.scope_segmenter import job_params as segmenter_params

        params = segmenter_params(cfg, study.scope(args.split), params["seed"])
    exp = ensure_experiment(uri, cfg.tracking.experiment or cfg.name, study.root / "mlartifacts") if tracked else None
    spec = JobSpec(
        kind=kind,
        key=run_name(kind, params),
        params=params,
        config=to_dict(cfg),
        tracking_uri=uri if tracked else None,
        experiment_id=exp,
        parent_run_id=None,
        cfg_hash=job_hash(cfg, kind, params),
    )
    summary = execute(spec)
    print(json.dumps(summary, indent=1, default=str))
    return 0
