"""The profiling grid: one job per configuration through ``benchmark.run.dispatch.dispatch``; rows to CSV and MLflow.

The grid is the product of engines x ZeRO stages (DeepSpeed only) x precisions x ranks x compile x
channels-last. Its first point is the baseline; the run adds, unless switched off:

- the reference: the same networks trained by a bare loop (``mode=bare``), one per precision/compile/layout;
- the data-path check: the baseline again with the study's cached volumes and batch function (``data=loader``);
- sampling times (DDPM and DDIM per volume for diffusion models) in the baseline job.

Where a job runs: on this machine (``debug``, ``pool``) each job measures in a fresh child process (so peak
RSS is the job's own; ``--in-process`` measures in the job's process instead); a ``local`` or Slurm job is its own
process; multi-rank configurations run under ``python -m torch.distributed.run`` as a child of the job, or as
``tasks_per_node`` tasks of one Slurm job. ``python -m benchmark.profiling.grid SPEC RESULT`` is the child.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.config import ClusterConfig, load_config, to_dict
from benchmark.errors import ConfigError, TrainingError
from benchmark.profiling.measure import ProfilePoint, measure, pool_rounds
from benchmark.profiling.results import add_ratios, failed_row, log_profile, summarise, write_csv

REPO_ROOT = Path(__file__).resolve().parents[2]
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


@dataclasses.dataclass(kw_only=True)
class GridOptions:
    """What ``launchers/profile_throughput.py`` asks for (see its ``--help``)."""

    model: str
    shape: tuple[int, int, int] | None = None  # None: the study's preprocess.shape
    batch_size: int | None = None  # None: segmentation.batch_size (unet) / train.batch_size (generators)
    engines: tuple[str, ...] = ("torch",)
    zero: tuple[int, ...] = (2,)
    precisions: tuple[str, ...] = ("fp32",)
    ranks: tuple[int, ...] = (1,)
    compile: tuple[bool, ...] = (False,)
    channels_last: tuple[bool, ...] = (False,)
    steps: int = 50
    warmup: int = 10
    rounds: int = 3  # the baseline, its reference and its loader check alternate this often in one process
    threads: int = 0
    seed: int = 0
    tiny: bool = False
    model_set: dict[str, Any] = dataclasses.field(default_factory=dict)
    reference: bool = True
    loader: bool = True
    sampling: bool = True
    isolate: bool = True
    device: str = "auto"
    executor: str | None = None
    out: str | None = None
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str = "profiling"
    config_path: str | None = "configs/default.yaml"
    overrides: tuple[str, ...] = ()


def _check(opts: GridOptions) -> None:
    bad = [z for z in opts.zero if z not in (0, 1, 2)]
    if bad:
        raise ConfigError(
            f"--zero {bad[0]}: the engine supports ZeRO stages 0, 1 and 2 (ZeRO-3 partitions the "
            "parameters, which sampling from the plain modules cannot use)"
        )
    for name, values, allowed in (
        ("--engine", opts.engines, ("torch", "deepspeed")),
        ("--precision", opts.precisions, ("fp32", "bf16", "fp16")),
    ):
        for v in values:
            if v not in allowed:
                raise ConfigError(f"{name} {v}: choose from {', '.join(allowed)}")
    if any(r < 1 for r in opts.ranks):
        raise ConfigError(f"--ranks {opts.ranks}: every value must be >= 1")


def build_grid(opts: GridOptions, cfg: Any) -> list[ProfilePoint]:
    """The configurations to run: the baseline, its bare reference and data-path check, then the rest.

    Args:
        opts: the grid request.
        cfg: the resolved study config.

    Returns:
        Unique ``ProfilePoint`` s.
    """
    _check(opts)
    out = Path(opts.out or "runs/profile")
    batch = opts.batch_size or (cfg.segmentation.batch_size if opts.model == "unet" else cfg.train.batch_size)
    base = dict(
        model=opts.model, shape=tuple(opts.shape or cfg.preprocess.shape), batch_size=batch, steps=opts.steps,
        warmup=opts.warmup, threads=opts.threads, seed=opts.seed, tiny=opts.tiny, model_set=dict(opts.model_set),
        device=opts.device, config=to_dict(cfg), out_dir=str(out / "scratch"),
    )  # fmt: skip
    points: dict[str, ProfilePoint] = {}
    axes = itertools.product(opts.engines, opts.precisions, opts.ranks, opts.compile, opts.channels_last)
    for engine, precision, ranks, comp, cl in axes:
        for zero in opts.zero if engine == "deepspeed" else (None,):
            p = ProfilePoint(**base, engine=engine, zero_stage=zero, precision=precision, ranks=ranks, compile=comp,
                             channels_last=cl)  # fmt: skip
            points.setdefault(p.key, p)
    suite = list(points.values())
    baseline = suite[0]
    bare = {}
    for p in suite if opts.reference else ():
        ref = ProfilePoint(**base, mode="bare", precision=p.precision, compile=p.compile, channels_last=p.channels_last)
        bare.setdefault(ref.key, ref)
    refs = list(bare.values())
    # the baseline, its reference and its data-path check run back to back: their ratios see the same machine load
    checks = [dataclasses.replace(baseline, data="loader")] if opts.loader else []
    return [dataclasses.replace(baseline, sampling=opts.sampling), *refs[:1], *checks, *suite[1:], *refs[1:]]


def group_grid(grid: list[ProfilePoint], opts: GridOptions) -> list[list[ProfilePoint]]:
    """Jobs: the single-rank baseline with its reference and data-path check is one job (the three alternate for
    ``opts.rounds`` rounds in one process, so their ratios see the same machine load); every other point is one.
    """
    if opts.rounds < 1:
        raise ConfigError(f"--rounds {opts.rounds}: must be >= 1")
    first = grid[0]
    paired = [p for p in grid[1:3] if p.ranks == 1 and (p.mode == "bare" or p.data == "loader")]
    if first.ranks != 1 or not paired:
        return [[p] for p in grid]
    return [[first, *paired]] + [[p] for p in grid[1 + len(paired) :]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS and not k.startswith("SUBMITIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["LGE_PROFILE_ISOLATED"] = "1"
    return env


def _run_child(points: list[ProfilePoint], rounds: int) -> list[dict[str, Any]]:
    point = points[0]
    folder = Path(point.out_dir).parent / "points" / point.key.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    spec, result, log = folder / "spec.json", folder / "result.json", folder / "worker.log"
    spec.write_text(json.dumps({"points": [dataclasses.asdict(p) for p in points], "rounds": rounds}))
    result.unlink(missing_ok=True)
    worker = ["-m", "benchmark.profiling.grid", str(spec), str(result)]
    if point.ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(point.ranks), "--master_addr",
                    "127.0.0.1", "--master_port", str(_free_port())]  # fmt: skip
        worker = launcher + worker
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, *worker], env=_child_env(), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not result.is_file():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-6:]
        raise TrainingError(f"{point.key}: worker exited with code {proc.returncode} (log {log}): " + " | ".join(tail))
    return json.loads(result.read_text())


def measure_group(points: list[ProfilePoint], rounds: int = 1) -> list[dict[str, Any]]:
    """Measure several configurations alternately for ``rounds`` rounds in this process; timed steps are pooled.

    Sampling is timed in the first round only.

    Args:
        points: configurations with the same number of ranks.
        rounds: how often each is measured.

    Returns:
        One row per configuration and stage (empty on ranks other than 0).
    """
    results: dict[str, list] = {p.key: [] for p in points}
    for r in range(rounds):
        for p in points:
            results[p.key].append(measure(dataclasses.replace(p, sampling=p.sampling and r == 0)))
    rows = [row for p in points for row in pool_rounds(results[p.key], p)]
    if len(points) > 1:
        for row in rows:
            row["peak_mem_source"] += f" (one process for {len(points)} alternating configurations)"
    return rows


def run_point(points: list[ProfilePoint], isolate: bool = True, rounds: int = 1) -> list[dict[str, Any]]:
    """The job: measure ``points`` here, in a child process, or under torchrun (see the module docstring).

    Args:
        points: one configuration, or a ratio group of single-rank ones (see ``group_grid``).
        isolate: run single-rank points in a child process unless the job already has its own process.
        rounds: rounds of ``measure_group``.

    Returns:
        The rows (empty on ranks other than 0).
    """
    ranks = points[0].ranks
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1")) if os.environ.get("SUBMITIT_EXECUTOR") else 1
    if ranks > 1 and slurm_tasks != ranks:
        return _run_child(points, rounds)
    if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit job is a process of its own
        os.environ["LGE_PROFILE_ISOLATED"] = "1"
        return measure_group(points, rounds)
    return _run_child(points, rounds) if isolate else measure_group(points, rounds)


def _executors(opts: GridOptions, cfg: Any, groups: list[list[ProfilePoint]]) -> list[tuple[ClusterConfig, list]]:
    # timings of concurrent jobs on one machine would be meaningless: local jobs run one at a time
    cluster = dataclasses.replace(cfg.cluster, executor=opts.executor or cfg.cluster.executor, max_local_jobs=1)
    if cluster.executor != "slurm":
        return [(cluster, groups)]
    out = []
    for ranks in sorted({g[0].ranks for g in groups}):
        gpus = ranks if cluster.gpus_per_node > 0 else 0
        sub = dataclasses.replace(cluster, tasks_per_node=ranks, gpus_per_node=gpus)
        out.append((sub, [g for g in groups if g[0].ranks == ranks]))
    return out


def run_profile(opts: GridOptions) -> tuple[Path, dict[str, Any]]:
    """Run the grid and write ``profile.csv`` and ``summary.json`` (and MLflow runs when tracking is on).

    Args:
        opts: the grid request.

    Returns:
        ``(csv path, summary)``.
    """
    from benchmark.run.dispatch import JobNode, dispatch

    config = opts.config_path
    if config and not Path(config).is_file() and (REPO_ROOT / config).is_file():
        config = str(REPO_ROOT / config)  # the shipped configs also work from another working folder
    cfg = load_config(config, list(opts.overrides))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    opts = dataclasses.replace(opts, out=str(Path(opts.out or f"runs/profile/{opts.model}-{stamp}").resolve()))
    out = Path(opts.out)
    grid = build_grid(opts, cfg)
    rows: list[dict[str, Any]] = []
    for index, (cluster, groups) in enumerate(_executors(opts, cfg, group_grid(grid, opts))):
        nodes = [JobNode(g[0].key, "profile", run_point, (g, opts.isolate, opts.rounds if len(g) > 1 else 1))
                 for g in groups]  # fmt: skip
        outcomes = dispatch(nodes, cluster, out / "submitit" / str(index), on_outcome=_progress)
        for g in groups:
            o = outcomes[g[0].key]
            rows += o.result if o.status == "done" else [failed_row(p, o.error) for p in g]
    add_ratios(rows)
    csv = write_csv(rows, out / "profile.csv")
    summary = summarise(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if opts.tracking:
        log_profile(rows, summary, csv, opts)
    return csv, summary


def _progress(outcome: Any) -> None:
    print(f"[{outcome.status}] {outcome.key} ({outcome.seconds:.0f} s)", file=sys.stderr, flush=True)


def _worker(argv: list[str]) -> int:
    from benchmark.engine import distributed

    spec, result = Path(argv[0]), Path(argv[1])
    values = json.loads(spec.read_text())
    group = values if "points" in values else {"points": [values], "rounds": 1}
    points = [ProfilePoint(**{**p, "shape": tuple(p["shape"])}) for p in group["points"]]
    rows = measure_group(points, int(group["rounds"]))
    if distributed.get_rank() == 0:
        write_text_atomic(result, json.dumps(rows))
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
