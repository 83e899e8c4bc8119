"""The cost plan over a study's job graph: one row per job kind and training stage, and the study's GPU-hours.

``plan_rows`` groups the graph's jobs (``(key, kind, params, deps)``, as the sweep builds them) by what they train:
a generator (one row per stage), the scope segmenter, each segmentation arm (its own step budget). Jobs that train
nothing (quality, robustness, prepare, report) get a row without GPU-hours: the image-quality jobs run on the
CPU, the robustness jobs only run inference. Steps per job are the one-rank job's, from ``epochs`` x
``ceil(training cases / batch)`` when epochs are set (else the configured steps); a job on N ranks takes 1/N of
them per rank. Generator jobs' sampling after training is not costed. Nothing here reads or writes data.

The data path: each training row also carries the loader workers a rank gets (``train.loader_workers``; ``auto``
counts the job's ``cpus_per_task``), the samples per second one worker builds (timed here, on this machine's CPU,
by ``benchmark.profiling.loader`` at the job's shape and patch), the steps per second the plan's step time
expects, and ``data-bound: yes`` where workers x samples/s per worker < batch x steps/s (the GPU would wait).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmark.config import StudyConfig
from benchmark.engine.batches import resolve_loader_workers
from benchmark.errors import ConfigError
from benchmark.profiling.plan import (
    DEFAULT_MFU,
    GIB,
    StageCost,
    fixes,
    peak_for,
    smallest_costs,
    state_bytes,
    total_bytes,
)

# scans of the public releases, for a plan made before the dataset is on disk (``--plan-cases`` replaces them)
KNOWN_SCANS = {"la2018": 154, "msd": 20}
UNTRAINED = {"quality": "CPU job (image metrics): no GPU-hours", "robustness": "inference only: not costed"}


def n_scans(cfg: StudyConfig, override: int | None) -> tuple[int, str]:
    """Scans of the configured dataset and where the count comes from (file names only; no voxel is read).

    Args:
        cfg: the study config (``data``).
        override: ``--plan-cases``.
    """
    if override is not None:
        if override < 2:
            raise ConfigError(f"--plan-cases: needs at least 2 scans, got {override}")
        return override, "--plan-cases"
    if cfg.data.kind == "phantom":
        lo, hi = cfg.data.phantom.scans_per_patient
        return round(cfg.data.phantom.n_patients * (lo + hi) / 2), "phantom patients x mean scans per patient"
    if cfg.data.root and Path(cfg.data.root).is_dir():
        from benchmark.data.adapters import list_cases

        return len(list_cases(cfg.data)), f"listed in {cfg.data.root}"
    if cfg.data.kind in KNOWN_SCANS:
        return KNOWN_SCANS[cfg.data.kind], f"the public {cfg.data.kind} release ({cfg.data.root} not found)"
    raise ConfigError(
        f"data.root {cfg.data.root!r} not found and {cfg.data.kind} has no known size: pass --plan-cases N"
    )


def zero_stage(cfg: StudyConfig) -> int:
    """The ZeRO stage of the study's jobs: 0 under the torch engine, else ``train.zero_stage`` or the JSON's."""
    if cfg.train.engine != "deepspeed":
        return 0
    if cfg.train.zero_stage is not None:
        return cfg.train.zero_stage
    path = Path(cfg.train.deepspeed_config)
    if not path.is_file():
        path = Path(__file__).resolve().parents[2] / cfg.train.deepspeed_config
    try:
        return int(json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"train.deepspeed_config {cfg.train.deepspeed_config}: {exc}") from None


def _what(cfg: StudyConfig, kind: str, params: dict[str, Any]) -> tuple[str, str, tuple[int, ...], int, str]:
    """(row label, model, shape, batch, precision) of a training job."""
    if kind == "generator":
        from benchmark.generators import split_generator_name

        spec, _ = split_generator_name(params["generator"])
        precision = cfg.generators[spec.name].precision or cfg.train.precision
        shape = tuple(cfg.preprocess.shape)
        return f"generator {params['generator']}", spec.name, shape, cfg.train.batch_size, precision
    seg = cfg.segmentation
    shape = tuple(seg.patch) if seg.patch else tuple(cfg.preprocess.shape)
    label = "scope_segmenter" if kind == "scope_segmenter" else f"segmentation {params['arm']}"
    if kind == "segmentation" and params.get("ratio", 1.0) != 1.0:
        label += f" r{params['ratio']:g}"
    return label, "unet", shape, seg.batch_size, cfg.train.precision


def _steps(cfg: StudyConfig, kind: str, params: dict[str, Any], cost: StageCost, n_train: int) -> int:
    """Optimizer steps of one stage of a one-rank job."""
    if kind == "generator":
        from benchmark.generators import split_generator_name

        epochs = cfg.generators[split_generator_name(params["generator"])[0].name].epochs
        return cost.config_steps if epochs is None else epochs * math.ceil(n_train / cfg.train.batch_size)
    from benchmark.segmentation.budget import MATCHED_ARM, arm_volumes, budget_steps, largest_arm_volumes

    seg = cfg.segmentation
    if kind == "scope_segmenter":
        return budget_steps(seg, n_real=n_train, n_volumes=n_train)
    arm, ratio = params["arm"], params.get("ratio", 1.0)
    vols = largest_arm_volumes(seg.arms, n_train, ratio) if arm == MATCHED_ARM else arm_volumes(arm, n_train, ratio)
    return budget_steps(seg, n_real=n_train, n_volumes=vols)


def loader_seconds(cfg: StudyConfig, kind: str) -> tuple[float, str]:
    """Seconds per sample in one loader worker of a ``kind`` job, and how that was obtained (the plan's note).

    Args:
        cfg: the study config (``preprocess.shape``, ``segmentation``, ``train.batch_size``).
        kind: ``generator``, ``scope_segmenter`` or ``segmentation``.
    """
    from benchmark.profiling import loader

    shape = tuple(cfg.preprocess.shape)
    if kind == "generator":
        return loader.stack_seconds(shape, cfg.train.batch_size), f"draw+stack timed at {'x'.join(map(str, shape))}"
    seg = cfg.segmentation
    how = "draw+stack timed (augmented on the GPU)" if seg.augment.device == "cuda" else "each transform timed once"
    return loader.sample_seconds(seg, shape), f"{how} at {'x'.join(map(str, shape))}, patch {seg.patch}"


def _workers(cfg: StudyConfig, cpus: int | None) -> int:
    """Loader workers of one rank of a job with ``cpus`` CPUs per task (0: batches built in the step)."""
    return resolve_loader_workers(cfg.train.loader_workers, cpus) if cfg.train.prefetch else 0


def _loader_columns(row: dict, workers: int, timed: tuple[float, str], cost: StageCost, step_s: float) -> None:
    """The data-path columns of one row: is the loader fast enough for the step time the plan expects?"""
    rate, steps = 1.0 / max(timed[0], 1e-9), 1.0 / step_s
    row["loader workers"], row["samples/s/worker"], row["steps/s"] = workers, rate, steps
    # workers = 0 builds each batch in the step: as one worker, whose time adds to the step's
    # a stage that steps no network (labels2image fits statistics) has no GPU step to starve
    starved = bool(cost.networks) and max(workers, 1) * rate < cost.batch * steps
    row["data-bound"] = "yes" if starved else ""
    row["loader method"] = timed[1]


def plan_rows(
    cfg: StudyConfig,
    graph: Sequence[tuple[str, str, dict, tuple]],
    *,
    gpu: dict[str, Any],
    mfu: float,
    cases: int | None = None,
    costs: Callable[..., list[StageCost]] | None = None,
    loader: Callable[[StudyConfig, str], tuple[float, str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per job kind and stage: parameters, memory per rank, FLOPs, steps, hours, fit and fix.

    Args:
        cfg: the study config (with its cluster section).
        graph: the sweep's jobs.
        gpu: the ``configs/gpu_peaks.yaml`` entry (``peaks``, ``memory_gb``).
        mfu: assumed model FLOPs utilisation (0 < mfu <= 1).
        cases: ``--plan-cases`` (else the dataset's scan count, see ``n_scans``).
        costs: the per-model measurement (default ``model_costs``).
        loader: seconds per sample in one loader worker and how they were obtained (default ``loader_seconds``).
    """
    if not 0.0 < mfu <= 1.0:
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")
    scans, _ = n_scans(cfg, cases)
    n_train = scans - max(1, round(cfg.splits.test_fraction * scans))
    stage, memory = zero_stage(cfg), float(gpu["memory_gb"]) * GIB
    measured: dict[tuple, list[StageCost]] = {}
    loaders: dict[str, tuple[float, str]] = {}  # per job kind: one timing, shared by the kind's rows
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _, kind, params, _ in graph:
        if kind in UNTRAINED:
            row = rows.setdefault((kind, ""), {"job kind": kind, "stage": "", "jobs": 0, "note": UNTRAINED[kind]})
            row["jobs"] += 1
            continue
        if kind not in ("generator", "scope_segmenter", "segmentation"):
            continue
        label, model, shape, batch, precision = _what(cfg, kind, params)
        key = (model, shape, batch, precision)
        if key not in measured:
            measured[key] = smallest_costs(model, cfg, shape, batch, precision, costs)
        res = cfg.cluster.for_kind(kind)
        ranks = max(1, (res.tasks_per_node or 1) * (res.nodes or 1))
        for cost in measured[key]:
            row = rows.get((label, cost.stage))
            if row is None:
                deepspeed = cfg.train.engine == "deepspeed"
                row = rows[(label, cost.stage)] = _stage_row(label, cost, (stage, ranks, deepspeed), memory, gpu)
                timed = "segmentation" if kind == "scope_segmenter" else kind  # one timing per loader
                if timed not in loaders:
                    loaders[timed] = (loader or loader_seconds)(cfg, kind)
                step_s = cost.flops / (peak_for(gpu, precision) * mfu)
                _loader_columns(row, _workers(cfg, res.cpus_per_task), loaders[timed], cost, step_s)
            steps = _steps(cfg, kind, params, cost, n_train)
            hours = math.ceil(steps / ranks) * cost.flops / (peak_for(gpu, precision) * mfu) / 3600
            row["jobs"] += 1
            row["steps/job"] = steps
            row["GPU-h"] += hours * ranks
            row["h/job"] = hours
    return list(rows.values())


def _stage_row(label: str, cost: StageCost, sharding: tuple[int, int, bool], memory: float, gpu: dict) -> dict:
    zero, ranks, deepspeed = sharding
    state = state_bytes(cost, zero_stage=zero, ranks=ranks, deepspeed=deepspeed)
    total = total_bytes(cost, state)
    fits = total <= memory
    return {
        "job kind": label, "stage": cost.stage, "jobs": 0, "networks": "+".join(cost.networks),
        "params M": cost.params_all / 1e6, "ranks": ranks, "ZeRO": zero, "precision": cost.precision,
        "batch": cost.batch, "shape": "x".join(map(str, cost.shape)), "opt state GiB/rank": state["optimizer"] / GIB,
        "activations GiB": cost.activation_bytes / GIB, "total GiB": total / GIB,
        f"fits {gpu['name']} {gpu['memory_gb']} GB": "yes" if fits else "NO",
        "TFLOP/step": cost.flops / 1e12, "steps/job": 0, "h/job": 0.0, "GPU-h": 0.0,
        "fix": "" if fits else fixes(cost, state, memory, cost.batch), "activation method": cost.method,
    }  # fmt: skip


def format_plan(rows: Sequence[dict[str, Any]], header: str) -> str:
    """The plan as text: ``header``, one line per row, the study's GPU-hours and the jobs that do not fit."""
    import pandas as pd

    frame = pd.DataFrame(list(rows)).fillna("")
    notes = ("activation method", "loader method", "note")
    shown = frame.drop(columns=[c for c in notes if c in frame.columns])
    text = [header, shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")]
    for col in notes:
        if col in frame.columns:
            text += [f"{r['job kind']} {r['stage']}: {r[col]}".strip() for _, r in frame.iterrows() if r[col]]
    total = sum(float(r.get("GPU-h", 0.0) or 0.0) for r in rows)
    fit_col = next((c for c in frame.columns if c.startswith("fits ")), None)
    misfits = [f"{r['job kind']} {r['stage']}" for _, r in frame.iterrows() if fit_col and r[fit_col] == "NO"]
    text.append(f"study total: {total:.1f} GPU-hours")
    text.append("does not fit: " + (", ".join(misfits) if misfits else "none"))
    bound = [f"{r['job kind']} {r['stage']}" for _, r in frame.iterrows() if r.get("data-bound") == "yes"]
    text.append("data-bound (loader slower than the GPU step): " + (", ".join(bound) if bound else "none"))
    return "\n".join(text)


def run_plan(
    cfg: StudyConfig,
    graph: Sequence[tuple[str, str, dict, tuple]],
    *,
    gpu_name: str | None,
    mfu: float,
    cases: int | None,
    csv: str | None,
) -> str:
    """``sweep.py --plan``: the table as text (and as CSV at ``csv``); reads no data, writes only ``csv``.

    Args:
        cfg: the study config with its cluster section.
        graph: the sweep's jobs.
        gpu_name: ``--plan-gpu`` (else the cluster's ``constraint`` picks the GPU).
        mfu: ``--mfu``.
        cases: ``--plan-cases``.
        csv: ``--plan-csv`` path, or None.
    """
    from benchmark.profiling.plan import gpu_entry

    gpu = gpu_entry(gpu_name, cfg.cluster.constraint)
    rows = plan_rows(cfg, graph, gpu=gpu, mfu=mfu, cases=cases)
    scans, source = n_scans(cfg, cases)
    header = (
        f"cost plan of study {cfg.name}: {len(graph)} jobs on {gpu['name']} ({gpu['memory_gb']} GB), MFU {mfu:g}; "
        f"{scans} scans ({source}); memory = weights + grads + Adam state (ZeRO-sharded) + activations x 1.15 + "
        "0.5 GiB context"
    )
    if csv:
        import pandas as pd

        from benchmark.atomic import write_text_atomic

        write_text_atomic(Path(csv), pd.DataFrame(rows).to_csv(index=False))
    return format_plan(rows, header)


def add_plan_flags(p: Any) -> None:
    """``--plan`` and its options on an ``argparse`` parser (the sweep's)."""
    p.add_argument("--plan", action="store_true", help="print the cost plan per job kind and exit (reads no data)")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"--plan: assumed MFU (default {DEFAULT_MFU})")
    p.add_argument("--plan-gpu", default=None, help="--plan: a GPU of configs/gpu_peaks.yaml (default: by constraint)")
    p.add_argument("--plan-cases", type=int, default=None, help="--plan: scans in the dataset (default: listed/known)")
    p.add_argument("--plan-csv", default=None, help="--plan: also write the table to this CSV file")


def plan_from_args(cfg: StudyConfig, graph: Sequence[tuple[str, str, dict, tuple]], args: Any) -> str:
    """``run_plan`` with the flags of ``add_plan_flags``."""
    return run_plan(cfg, graph, gpu_name=args.plan_gpu, mfu=args.mfu, cases=args.plan_cases, csv=args.plan_csv)
