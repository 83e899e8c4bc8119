"""Throughput, peak memory, FLOPs and MFU of one profiling configuration, measured through the real engine.

``measure(point)`` builds the model (the segmentation U-Net or a registered generator), trains it for
``warmup + steps + 1`` steps per stage with ``benchmark.engine.fit`` and returns one CSV row per stage. Nothing
in the engine changes: the model is wrapped (``_Profiled``) so that its ``train_step`` sees a timing
``StepContext`` around the engine's (backward and optimizer step timed, device-synchronised on GPUs), and
the engine may build batches ahead in a loader process (``train.prefetch``).

- step time: the period between the starts of consecutive ``train_step`` calls (everything the suite does per
  step: waiting for data, compute, NaN guard, logging); median and quartiles over the ``steps`` steps after ``warmup``;
- breakdown: data wait (the engine's ``StepTiming.data_s``), forward (``train_step`` minus backward and
  optimizer), backward, optimizer step, and ``other`` (the engine's per-step bookkeeping);
- FLOPs: the first warm-up step of each stage runs under ``FlopCounterMode`` (compiled modules eagerly);
- memory: ``torch.cuda.max_memory_allocated`` per stage on GPUs, peak RSS of the process on the CPU; a row with the
  real loader also has the loader process's peak RSS, on GPUs too (``peak_mem_loader_bytes``: the largest finished
  child process, so in a shared driver process possibly an earlier configuration's loader or DeepSpeed's compiler);
- optimizer state: bytes of the tensors in the optimizers' ``state`` on each rank after training (the
  partitions a ZeRO stage leaves on the rank).

``mode="bare"`` is the reference: the same networks and ``train_step`` driven by a plain loop with plain
optimizers (no engine, no checkpointing, no tracking, preloaded tensors).
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import StudyConfig, build_section
from benchmark.engine import distributed
from benchmark.errors import ConfigError
from benchmark.profiling.flops import count_flops
from benchmark.profiling.model import (
    bare_loop,
    build_model,
    environment,
    loader_batch_fn,
    memory_batch,
    opt_state_bytes,
    peak_flops,
    sampling_times,
)
from benchmark.profiling.results import COLUMNS, finish_row  # noqa: F401  (COLUMNS re-exported)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfilePoint:
    """One configuration of the grid (picklable; also passed to torchrun workers as JSON).

    Args:
        model: ``unet`` or a generator name.
        shape: volume (X, Y, Z).
        batch_size: per rank.
        engine / zero_stage / precision: the ``train`` settings (``zero_stage`` only for DeepSpeed).
        ranks: processes (torchrun locally, tasks on Slurm).
        compile / channels_last: ``module.compile()`` every network; channels_last_3d weights and inputs.
        mode: ``suite`` (the engine) or ``bare`` (the reference loop).
        data: ``memory`` (preloaded tensors) or ``loader`` (the study's cached volumes + the model's batch fn).
        steps / warmup: timed steps and warm-up steps per stage.
        threads: torch threads per rank (0: leave torch's default).
        sampling: also time DDPM/DDIM (or the default sampler) per volume after training.
        tiny: ``tiny()`` generator configs / a small U-Net.
        model_set: field -> value replacements of the model's config section (after ``tiny``).
        device: ``auto`` | ``cpu`` | ``cuda``.
        config: ``to_dict`` of the study config (model sections, data, ``train`` defaults).
        out_dir: scratch folder for the engine's checkpoints (removed afterwards).
    """

    model: str
    shape: tuple[int, int, int]
    batch_size: int
    engine: str = "torch"
    zero_stage: int | None = None
    precision: str = "fp32"
    ranks: int = 1
    compile: bool = False
    channels_last: bool = False
    mode: str = "suite"
    data: str = "memory"
    steps: int = 50
    warmup: int = 10
    threads: int = 0
    seed: int = 0
    sampling: bool = False
    tiny: bool = False
    model_set: dict = dataclasses.field(default_factory=dict)
    device: str = "auto"
    config: dict = dataclasses.field(default_factory=dict, repr=False)
    out_dir: str = "runs/profile"

    @property
    def key(self) -> str:
        zero = f"-zero{self.zero_stage}" if self.zero_stage is not None else ""
        flags = "".join(["-compile" if self.compile else "", "-cl" if self.channels_last else ""])
        return f"{self.model}/{self.mode}-{self.data}/{self.engine}{zero}/{self.precision}/r{self.ranks}{flags}"

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.steps < 2:
            raise ConfigError(
                f"--warmup {self.warmup} --steps {self.steps}: need warmup >= 1 (the FLOP-counting step) and steps >= 2"
            )
        if self.mode == "bare" and (self.ranks != 1 or self.data != "memory"):
            raise ConfigError("the bare reference loop runs on one rank with in-memory tensors only")


class _TimedContext:
    """The engine's ``StepContext`` with backward and optimizer step timed (synchronised on GPUs)."""

    def __init__(self, ctx: Any, sync: bool):
        self._ctx, self._sync = ctx, sync
        self.backward_s = self.optimizer_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def backward(self, name: str, loss: torch.Tensor) -> None:
        t0 = self._now()
        self._ctx.backward(name, loss)
        self.backward_s += self._now() - t0

    def optimizer_step(self, name: str) -> None:
        t0 = self._now()
        self._ctx.optimizer_step(name)
        self.optimizer_s += self._now() - t0


class _Profiled:
    """A ``Trainable`` wrapper recording per-step timings, FLOPs (first step of a stage) and memory per stage."""

    def __init__(self, model: Any, device: torch.device):
        self.model, self.networks, self.device = model, model.networks, device
        self.sync = device.type == "cuda"
        self.records: list[dict[str, Any]] = []
        self.flops: dict[str, int] = {}
        self.peaks: dict[str, int] = {}
        self.optimizers: dict[str, list[torch.optim.Optimizer]] = {}
        self._stage: str | None = None

    def stages(self):
        return self.model.stages()

    def make_optimizer(self, name: str, params: list, total_steps: int):
        opt, sched = self.model.make_optimizer(name, params, total_steps)
        self.optimizers.setdefault(name, []).append(opt)
        return opt, sched

    def state_extra(self) -> dict[str, Any]:
        return self.model.state_extra()

    def load_state_extra(self, state: dict[str, Any]) -> None:
        self.model.load_state_extra(state)

    def end_stage(self) -> None:
        if self._stage is not None and self.device.type == "cuda":
            self.peaks[self._stage] = int(torch.cuda.max_memory_allocated(self.device))

    def train_step(self, ctx: Any, stage: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if stage.name != self._stage:
            self.end_stage()
            self._stage = stage.name
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
        timed = _TimedContext(ctx, self.sync)
        if stage.name not in self.flops:
            out: dict[str, torch.Tensor] = {}
            self.flops[stage.name] = count_flops(lambda: out.update(self.model.train_step(timed, stage, batch)))
            return out
        t0 = timed._now()
        out = self.model.train_step(timed, stage, batch)
        train_s = timed._now() - t0
        self.records.append(
            {"stage": stage.name, "step": ctx.step, "t": t0, "train_s": train_s,
             "backward_s": timed.backward_s, "optimizer_s": timed.optimizer_s}
        )  # fmt: skip
        return out


def _resolve_device(point: ProfilePoint) -> torch.device:
    if point.device == "cuda" or (point.device == "auto" and torch.cuda.is_available()):
        local = distributed.detect_env().local_rank
        return torch.device("cuda", local % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def _prepare_networks(model: Any, point: ProfilePoint, device: torch.device) -> None:
    for net in model.networks.values():
        net.to(device)
        if point.channels_last:
            net.to(memory_format=torch.channels_last_3d)
        if point.compile:
            net.compile()


def _rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return int(resource.getrusage(who).ru_maxrss) * 1024  # Linux reports KiB


def measure(point: ProfilePoint) -> list[dict[str, Any]]:
    """Profile one configuration; returns one row per training stage on rank 0 and ``[]`` on other ranks.

    Args:
        point: the configuration.

    Returns:
        Rows with the measured columns filled (ratios are added by the grid driver). Raises the suite's errors
        (``ConfigError``, ``DataError``, ``TrainingError``) unchanged.
    """
    from benchmark.engine.loop import fit

    cfg: StudyConfig = build_section(StudyConfig, point.config, "")
    device = _resolve_device(point)
    # default: share this machine's cores between the ranks (2 ranks on 2 cores must not oversubscribe)
    threads = point.threads or max(1, len(os.sched_getaffinity(0)) // point.ranks)
    torch.set_num_threads(threads)
    torch.manual_seed(point.seed)
    model, label_classes, overrides = build_model(point, cfg)
    _prepare_networks(model, point, device)
    prof = _Profiled(model, device)
    batch = memory_batch(point, label_classes)
    n = point.warmup + point.steps + 1
    timings = []
    resident = {k: v.to(device) for k, v in batch.items()}  # in-memory data lives on the device already
    if point.mode == "bare":
        bare_loop(prof, resident, point, device)
    else:
        batch_fn = loader_batch_fn(point, cfg, label_classes) if point.data == "loader" else (lambda s, r: resident)
        train = dataclasses.replace(
            cfg.train, engine=point.engine, zero_stage=point.zero_stage, precision=point.precision,
            batch_size=point.batch_size, checkpoint_every=0, keep_checkpoints=1, log_every=10**9,
            sync_timing=device.type == "cuda", threads=threads,
            prefetch=cfg.train.prefetch if point.data == "loader" else 0,  # resident tensors need no loader
        )  # fmt: skip
        # one folder for all ranks (they write parts of the same checkpoints); removed once everyone is done
        scratch = Path(point.out_dir) / ("fit-" + point.key.replace("/", "_"))
        try:  # stage_steps are a one-rank job's: the engine gives each of the point's ranks n of them
            result = fit(
                prof, batch_fn, train=train, out_dir=scratch, seed=point.seed,
                resume=False, device=device, stage_steps={s.name: n * point.ranks for s in model.stages()},
            )  # fmt: skip
        finally:
            distributed.barrier()
            if distributed.get_rank() == 0:
                shutil.rmtree(scratch, ignore_errors=True)
        prof.end_stage()
        timings = result.timings
    # the loader process has normally been joined by now, so RUSAGE_CHILDREN holds its peak (the largest finished
    # child's); a worker that did not exit in time is terminated unwaited and not counted
    loader = point.mode == "suite" and point.data == "loader" and cfg.train.prefetch > 0
    local = {"peaks": prof.peaks, "rss": _rss_bytes(), "opt": {
        s.name: opt_state_bytes(prof.optimizers, s.networks) for s in model.stages()},
        "child_rss": _rss_bytes(resource.RUSAGE_CHILDREN) if loader else None}  # fmt: skip
    everyone = _gather(local)
    if distributed.get_rank() != 0:
        return []
    sampling, sampling_why = sampling_times(model, batch, device) if point.sampling else ({}, {})
    env = environment(device)
    rows = []
    for stage in model.stages():
        row, why = _stage_row(point, stage.name, prof, timings, everyone, device)
        row.update(env)
        row.update(sampling)
        row["model_overrides"] = ";".join(f"{k}={v}" for k, v in overrides.items()) or "none"
        rows.append(finish_row(row, {**why, **sampling_why}))
    return rows


def _gather(local: dict[str, Any]) -> list[dict[str, Any]]:
    import torch.distributed as dist

    if distributed.get_world_size() == 1:
        return [local]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, local)
    return out


def _stats(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    q25, med, q75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(med), float(q25), float(q75)


def _stage_row(point: ProfilePoint, stage: str, prof: _Profiled, timings: list, everyone: list, device):
    recs = sorted((r for r in prof.records if r["stage"] == stage), key=lambda r: r["step"])
    data = {t.step: t.data_s for t in timings if t.stage == stage}
    timed = [r for r in recs if point.warmup <= r["step"] < point.warmup + point.steps]
    nxt = {r["step"]: r["t"] for r in recs}
    samples: dict[str, list[float]] = {k: [] for k in ("period", "data", "forward", "backward", "optimizer", "other")}
    for r in timed:
        # a period runs from this train_step's start to the next one's, so it holds the next step's data wait
        period, d = nxt[r["step"] + 1] - r["t"], data.get(r["step"] + 1, 0.0)
        samples["period"].append(period)
        samples["data"].append(d)
        samples["forward"].append(r["train_s"] - r["backward_s"] - r["optimizer_s"])
        samples["backward"].append(r["backward_s"])
        samples["optimizer"].append(r["optimizer_s"])
        samples["other"].append(period - d - r["train_s"])
    cuda = device.type == "cuda"
    peak = max((e["peaks"].get(stage, 0) for e in everyone), default=0) if cuda else max(e["rss"] for e in everyone)
    opt = [e["opt"][stage] for e in everyone]
    loaders = [e["child_rss"] for e in everyone]
    row = {
        "point": point.key, "model": point.model, "stage": stage, "mode": point.mode, "data": point.data,
        "shape": "x".join(map(str, point.shape)), "batch_size": point.batch_size, "engine": point.engine,
        "zero_stage": point.zero_stage if point.engine == "deepspeed" and point.mode == "suite" else math.nan,
        "precision": point.precision, "ranks": point.ranks, "compile": point.compile,
        "channels_last": point.channels_last, "steps": point.steps, "warmup": point.warmup, "rounds": 1,
        "peak_mem_bytes": peak,
        "peak_mem_loader_bytes": math.nan if None in loaders else max(loaders),  # host RSS, on GPUs too
        "peak_mem_source": "torch.cuda.max_memory_allocated (stage, max over ranks)" if cuda else
        ("ru_maxrss (process, max over ranks)" if os.environ.get("LGE_PROFILE_ISOLATED") else
         "ru_maxrss (shared driver process: includes earlier work)"),
        "opt_state_bytes_per_rank": max(opt), "opt_state_bytes_all_ranks": sum(opt),
        "flops_per_step": prof.flops.get(stage, math.nan), "_samples": samples,
    }  # fmt: skip
    row.update(timing_columns(samples, point.batch_size * point.ranks, row["flops_per_step"]))
    values, why = peak_flops(device, point.precision, row["achieved_flops_per_s"])
    row.update(values)
    return row, why


def timing_columns(samples: dict[str, list[float]], samples_per_step: int, flops: float) -> dict[str, float]:
    """Step-time statistics of the timed steps: median and quartiles of the period, medians of the parts.

    Args:
        samples: per-step lists ``period``, ``data``, ``forward``, ``backward``, ``optimizer``, ``other`` (s).
        samples_per_step: volumes per step over all ranks.
        flops: FLOPs of one step on one rank.
    """
    med, q25, q75 = _stats(samples["period"])
    out = {"step_s_median": med, "step_s_q25": q25, "step_s_q75": q75, "step_s_iqr": q75 - q25}
    out["samples_per_s"] = samples_per_step / med
    for part in ("data", "forward", "backward", "optimizer", "other"):
        out[f"{part}_s_median"] = _stats(samples[part])[0]
    out["achieved_flops_per_s"] = flops / med
    return out


def pool_rounds(rounds: list[list[dict[str, Any]]], point: ProfilePoint) -> list[dict[str, Any]]:
    """One row per stage from several rounds of the same configuration: timed steps pooled, the rest of round 1.

    Args:
        rounds: ``measure(point)`` of every round (interleaved with other configurations by the caller).
        point: the configuration.

    Returns:
        Rows whose timing columns are computed over all rounds' timed steps (``rounds`` set).
    """
    if not rounds or not rounds[0]:
        return []
    out = []
    for i, first in enumerate(rounds[0]):
        row = dict(first)
        samples = {k: [v for r in rounds for v in r[i]["_samples"][k]] for k in first["_samples"]}
        row.update(timing_columns(samples, point.batch_size * point.ranks, row["flops_per_step"]))
        row["_samples"], row["rounds"] = samples, len(rounds)
        row["mfu"] = row["achieved_flops_per_s"] / row["peak_flops_per_s"]  # NaN stays NaN off known GPUs
        out.append(finish_row(row))
    return out
