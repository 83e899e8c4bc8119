"""``python launchers/robustness.py --study runs/default``: the robustness study of a finished study.

Every finished segmentation job of the study (same config as its ``config.yaml``) gets one robustness job per shift
family (``benchmark/run/kinds/robustness.py``); they go through the sweep's drivers, so they run here (``debug`` |
``pool`` | ``local``) or on Slurm, skip what is done, and log to the study's MLflow experiment; the study's report is
written again with the robustness section. Segmentation jobs that have not finished are left out (with a line
saying so): this launcher never trains.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from benchmark.config import StudyConfig
from benchmark.errors import ConfigError
from benchmark.run.job import DONE_FILE, job_hash, out_dir
from benchmark.run.kinds.robustness import Graph
from benchmark.run.sweep import add_driver_flags, build_graph, drive, resolve_config, show_or_cancel
from benchmark.study import Study

PROGRAM = "launchers/robustness.py"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The launcher's flags and ``key=value`` overrides (e.g. ``robustness.families=[noise,site]``), in any order.

    Args:
        argv: the command line without the program name.
    """
    p = argparse.ArgumentParser(prog="robustness.py", description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="a finished study folder (with config.yaml and splits.json)")
    p.add_argument("--generators", default=None, help="as the sweep's --generators, when the sweep was given one")
    add_driver_flags(p)
    return p.parse_intermixed_args(argv)


def study_config(args: argparse.Namespace) -> tuple[StudyConfig, list[str]]:
    """The finished study's resolved config with robustness on, the flags and overrides applied.

    Args:
        args: ``parse_args``' result.

    Returns:
        The config and the generators (as the sweep resolves them).
    """
    root = Path(args.study).expanduser().resolve()
    config = root / "config.yaml"
    if not config.is_file() or not (root / "splits.json").is_file():
        raise ConfigError(f"--study {args.study}: not a study folder (no config.yaml and splits.json); run the sweep")
    where = [f"output_dir={root.parent}", f"name={root.name}", "robustness.enabled=true"]
    sweep_args = argparse.Namespace(
        **{k: None for k in ("splits", "seeds", "data", "dataset_kind", "protocol")},
        config=str(config),
        overrides=[*where, *args.overrides],
        **{k: getattr(args, k) for k in ("generators", "executor", "cluster", "tracking_uri")},
        **{k: getattr(args, k) for k in ("external_test", "external_kind")},
    )
    return resolve_config(sweep_args)


def finished_only(study: Study, graph: Graph) -> tuple[Graph, list[str]]:
    """The robustness jobs whose segmentation job finished with this config, with those segmentation jobs.

    Args:
        study: the study (paths only).
        graph: the study's full job graph.

    Returns:
        The graph to dispatch and the keys of segmentation jobs left out (not finished).
    """
    seg = {key: (kind, p) for key, kind, p, _ in graph if kind == "segmentation"}
    done = {key for key, (kind, p) in seg.items() if _done_on_disk(study, kind, p)}
    kept = [(k, kind, p, ()) for k, kind, p, _ in graph if k in done]  # done: what they depended on is not needed
    kept += [(k, kind, p, d) for k, kind, p, d in graph if kind == "robustness" and d[0] in done]
    return kept, sorted(set(seg) - done)


def _done_on_disk(study: Study, kind: str, params: dict) -> bool:
    try:
        summary = json.loads((out_dir(study, kind, params) / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return summary.get("cfg_hash") == job_hash(study.cfg, kind, params)


def main(argv: list[str]) -> int:
    """Run, submit, dry-run, show or cancel a finished study's robustness jobs; 1 when any job failed."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg, gens = study_config(args)
    study = Study(cfg)
    if args.status or args.cancel:
        return show_or_cancel(study, args)
    graph, missing = finished_only(study, build_graph(cfg, gens, cfg.splits.n_splits, study.scope))
    robust = [key for key, kind, _, _ in graph if kind == "robustness"]
    if not robust:
        raise ConfigError(f"--study {args.study}: no segmentation job finished with this config; run the sweep first")
    left = f"; {len(missing)} unfinished segmentation job(s) left out: {', '.join(missing[:5])}" if missing else ""
    print(f"study {cfg.name}: {len(robust)} robustness jobs for {len(graph) - len(robust)} finished segmenters{left}")
    if args.dry_run:
        print("\n".join(f"  {key}" for key in robust))
        return 0
    return drive(study, gens, graph, args, argv, PROGRAM)
