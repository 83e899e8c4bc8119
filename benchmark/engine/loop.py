"""The one training loop: every generator and the segmenter are trained by ``fit``.

``fit`` runs a ``Trainable``'s stages in order. ``train.engine`` selects how a network is stepped: plain
PyTorch (gradients averaged over ranks by hand when there is more than one) or one DeepSpeed engine per
network (ZeRO stage and precision from ``train``/``train.deepspeed_config``). Both give the model the same
``StepContext``, so model code never touches torch.distributed or deepspeed, and nothing here looks at a
model's name or type.

Data parallelism: stage steps are a one-rank job's. ``fit`` sets up the process group, then gives each of N ranks
``ceil(steps / N)`` steps (as many epochs as on one rank, an N times larger global batch), recorded in the
``FitResult`` and on the run (tags ``world_size``, ``steps_per_rank.<stage>``). fp16 (torch engine): see ``_skipped``.

Determinism: the batch RNG handed to ``batch_fn`` and the context's ``torch.Generator`` are re-seeded every
step from (seed, rank, stage index, step); the global python/numpy/torch RNGs are seeded once from
(seed, rank) and checkpointed. A run resumed from a checkpoint therefore sees exactly the batches and noise
an uninterrupted one would and (on the CPU, fp32) produces bit-identical losses. Seeding and the batch loader live in
``benchmark.engine.batches``.

Checkpoints are folders ``out_dir/checkpoints/ckpt-<global step>/`` (see ``benchmark.engine.checkpoint``), written
under a ``.tmp`` name and renamed when complete: every ``train.checkpoint_every`` steps, at the end of every stage
and, in a submitit job, at the step boundary after the preemption/time-out signal (``benchmark.engine.preemption``),
before submitit's handler requeues the job. A checkpoint also holds the loss sums of the log interval in progress,
so the history of a resumed run matches an uninterrupted one wherever it was cut.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import TrainConfig
from benchmark.engine import checkpoint as ckpt
from benchmark.engine import distributed
from benchmark.engine.backends import DeepSpeedContext, TorchContext
from benchmark.engine.batches import Batches, BatchFn, derive_seed, seed_everything
from benchmark.engine.contract import Stage, Trainable
from benchmark.engine.device import check_precision
from benchmark.engine.preemption import PreemptionHook
from benchmark.errors import ConfigError, TrainingError
from benchmark.tracking.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_MAX_SKIPPED_IN_A_ROW = 25  # fp16: the scale has been halved this often (65536 -> ~0.002): the run has diverged


@dataclass
class StepTiming:
    """Wall time of one optimisation step, split into waiting for data and computing.

    ``compute_s`` ends after the losses were copied to the host (the NaN guard does this every step), so on a
    GPU it already includes the device work of the step; ``train.sync_timing`` also synchronises before the
    step starts so ``data_s`` excludes queued kernels of the previous step.
    """

    stage: str
    step: int
    data_s: float
    compute_s: float


@dataclass
class FitResult:
    """What ``fit`` returns.

    Args:
        history: one dict per logged step: ``stage``, ``step`` (within the stage), ``global_step``,
            ``steps_per_s`` and the losses averaged over the steps since the previous log line.
        final_losses: the losses of the last step trained (restored from the checkpoint when nothing was left
            to train).
        steps: global optimizer steps completed over all stages (including those of resumed runs).
        checkpoint: the newest checkpoint folder (None when none was written or found).
        resumed_from: the checkpoint this call resumed from, if any.
        timings: per-step timings of the steps this call trained (for throughput profiling).
        rank / world_size: this process's global rank (only rank 0 writes a job's outputs) / ranks that trained.
        steps_per_rank: stage name -> optimizer steps of every rank (the one-rank steps / world size, rounded up).
        skipped_updates: fp16 (torch engine): network -> updates its grad scaler skipped for inf/NaN gradients
            (whole run, resumed parts included; also logged as ``skipped_updates.<network>``).
        nonfinite_steps: fp16: steps whose losses were not finite (their updates skipped; left out of the history).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    final_losses: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    checkpoint: Path | None = None
    resumed_from: Path | None = None
    timings: list[StepTiming] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    steps_per_rank: dict[str, int] = field(default_factory=dict)
    skipped_updates: dict[str, int] = field(default_factory=dict)
    nonfinite_steps: int = 0


def _resolve_stages(model: Trainable, stage_steps: dict[str, int] | None, world: int) -> list[Stage]:
    """The model's stages with the overridden one-rank step counts, each divided over ``world`` ranks."""
    stages = list(model.stages())
    names = [s.name for s in stages]
    for key in stage_steps or {}:
        if key not in names:
            raise ConfigError(f"stage_steps.{key}: unknown stage; stages of this model: {', '.join(names)}")
    for stage in stages:
        for net in stage.networks:
            if net not in model.networks:
                raise ConfigError(f"stage {stage.name!r}: network {net!r} is not one of {sorted(model.networks)}")
    overrides = stage_steps or {}
    return [Stage(s.name, s.networks, math.ceil(int(overrides.get(s.name, s.steps)) / world)) for s in stages]


def _resolve_device(device: torch.device | str | None, local_rank: int) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _make_context(model: Trainable, stages: list[Stage], train: TrainConfig, device: torch.device, world: int):
    steps_per_net: dict[str, int] = {}
    for stage in stages:
        for name in stage.networks:
            steps_per_net[name] = steps_per_net.get(name, 0) + stage.steps
    if train.engine not in ("torch", "deepspeed"):
        raise ConfigError(f"train.engine: {train.engine!r} is not one of 'torch', 'deepspeed'")
    backend = DeepSpeedContext if train.engine == "deepspeed" else TorchContext
    ctx = backend(model, steps_per_net, train, device, world)
    ctx.ranks = world
    return ctx


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _check_losses(
    losses: dict[str, torch.Tensor], stage: Stage, step: int, stop: bool = False, skip_nonfinite: bool = False
) -> tuple[dict[str, float], bool, bool]:
    """The losses as floats, whether they are finite on every rank, and whether any rank asked to stop at this step.

    A non-finite loss raises ``TrainingError`` naming it, unless ``skip_nonfinite`` (fp16 with grad scalers: the
    scalers found the same inf/NaN in the averaged gradients and skipped the update on every rank).
    """
    if not losses:
        raise TrainingError(f"stage {stage.name!r} step {step}: train_step returned no losses")
    names = list(losses)
    stacked = torch.stack([losses[n].detach().float().reshape(()) for n in names])
    if distributed.get_world_size() > 1:
        # every rank learns whether any rank's loss is non-finite (x * 0 is 0, or NaN for NaN and inf), so all of
        # them stop at this step with an error that names it, instead of failing (gloo) or waiting (NCCL) in the
        # next step's collective for a rank that has gone; the same reduction carries the stop request (a signal
        # may reach the ranks at different steps: all of them stop and checkpoint at the first step any rank saw it)
        probe = (stacked * 0).sum().reshape(1)
        anywhere = distributed.all_reduce_mean(torch.cat([probe, probe.new_full((1,), float(stop))]))
        stacked = torch.cat([stacked, anywhere])
    values = stacked.cpu().tolist()  # one host copy for all losses (and the flags): a single device sync per step
    values, flag = values[: len(names)], values[len(names) :]
    finite = bool(np.isfinite(values).all()) and (not flag or bool(np.isfinite(flag[0])))
    if not finite and not skip_nonfinite:
        for name, value in zip(names, values, strict=True):
            if not np.isfinite(value):
                raise TrainingError(f"stage {stage.name!r} step {step}: loss {name!r} is {value} (not finite)")
        raise TrainingError(
            f"stage {stage.name!r} step {step}: a loss is not finite on another rank (rank {distributed.get_rank()}"
            f" of {distributed.get_world_size()} stops with it; that rank's error names the loss)"
        )
    return dict(zip(names, values, strict=True)), finite, (flag[1] > 0 if flag else stop)


def _sync(device: torch.device, enabled: bool) -> None:
    if enabled and device.type == "cuda":
        torch.cuda.synchronize(device)


class _Progress:
    """Averages losses between log lines and reports them (log + tracker)."""

    def __init__(self, every: int, tracker: Tracker, main: bool):
        self.every, self.tracker, self.main = max(1, every), tracker, main
        self.sums: dict[str, float] = {}
        self.count = 0  # steps in ``sums`` (some may come from the checkpoint a run resumed from)
        self.timed = 0  # steps since ``t0``, for the speed
        self.t0 = time.perf_counter()

    def state(self) -> dict[str, Any]:
        """The sums of the log interval in progress (checkpointed)."""
        return {"sums": dict(self.sums), "count": self.count}

    def restore(self, state: dict[str, Any]) -> None:
        self.sums, self.count = {k: float(v) for k, v in state.get("sums", {}).items()}, int(state.get("count", 0))

    def update(
        self, stage: Stage, step: int, global_step: int, values: dict[str, float] | None
    ) -> dict[str, Any] | None:
        if values is not None:  # None: an fp16 step the scalers skipped, left out of the means
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1
        self.timed += 1
        if (step + 1) % self.every and step + 1 != stage.steps or self.count == 0:
            return None
        elapsed = time.perf_counter() - self.t0
        means = {k: v / self.count for k, v in self.sums.items()}
        entry = {"stage": stage.name, "step": step + 1, "global_step": global_step, **means}
        entry["steps_per_s"] = self.timed / elapsed if elapsed > 0 else float("inf")
        if self.main:
            text = " ".join(f"{k}={v:.4g}" for k, v in means.items())
            log.info("%s %d/%d %s (%.2f steps/s)", stage.name, step + 1, stage.steps, text, entry["steps_per_s"])
            metrics = {f"{stage.name}/{k}": v for k, v in means.items()}
            metrics[f"{stage.name}/steps_per_s"] = entry["steps_per_s"]
            self.tracker.log_metrics(metrics, step=global_step)
        self.sums, self.count, self.timed, self.t0 = {}, 0, 0, time.perf_counter()
        return entry


def _set_stage_modes(ctx: Any, model: Trainable, stage: Stage) -> None:
    for name, net in model.networks.items():
        trained = name in stage.networks
        ctx.set_requires_grad(name, trained)
        net.train(trained)


def fit(
    model: Trainable,
    batch_fn: BatchFn,
    *,
    train: TrainConfig,
    out_dir: Path,
    seed: int,
    tracker: Tracker | None = None,
    resume: bool = True,
    device: torch.device | None = None,
    stage_steps: dict[str, int] | None = None,
) -> FitResult:
    """Train ``model`` through all its stages, with checkpoints, resume, NaN guard and progress.

    In a submitit job the preemption/time-out signal is deferred to the end of the step in progress: every rank
    stops at the same step, a checkpoint is written there and then submitit's handler runs (it requeues the job
    and exits; the rerun resumes from that checkpoint). The handler is restored when ``fit`` returns.

    Args:
        model: the ``Trainable`` (its networks are moved to ``device``).
        batch_fn: ``batch_fn(step, rng)`` returns one batch for this rank; ``rng`` is seeded from
            (seed, rank, stage index, step) and must be its only source of randomness. With ``train.prefetch``
            it runs ahead of the step in a forked loader process (on Linux).
        train: engine settings (engine, precision, ZeRO stage, checkpoint/log intervals).
        out_dir: run folder; checkpoints go to ``out_dir/checkpoints``.
        seed: the run's seed.
        tracker: receives the logged losses (on rank 0 only); None records nothing.
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` if there is one.
        device: None picks ``cuda:<local rank>`` when CUDA is available, else the CPU.
        stage_steps: per-stage step counts replacing ``Stage.steps`` (tests, profiling); one-rank counts, divided
            over the ranks like ``Stage.steps``.

    Returns:
        A ``FitResult``. Raises ``TrainingError`` on a non-finite loss (naming stage, step and loss; under fp16
        with the torch engine only after ``_MAX_SKIPPED_IN_A_ROW`` such steps in a row), ``CheckpointError`` on a
        corrupt, foreign or mismatched checkpoint (nothing is written then).
    """
    denv = distributed.detect_env()
    device = _resolve_device(device, denv.local_rank)
    check_precision(train.precision, device)
    if train.engine == "deepspeed" or denv.world_size > 1:
        distributed.init_distributed("nccl" if device.type == "cuda" else "gloo")
    rank, world = distributed.get_rank(), distributed.get_world_size()  # known only now that the group exists
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    stages = _resolve_stages(model, stage_steps, world)
    for net in model.networks.values():
        net.to(device)
    seed_everything(seed, rank)
    ctx = _make_context(model, stages, train, device, world)
    tracker = tracker if tracker is not None and rank == 0 else NullTracker()
    per_rank = {s.name: s.steps for s in stages}
    tracker.set_tags({"world_size": world, **{f"steps_per_rank.{k}": v for k, v in per_rank.items()}})
    with PreemptionHook() as hook:
        run = _Run(model, ctx, train, Path(out_dir) / "checkpoints", seed, rank, tracker, hook)
        run.result.rank, run.result.world_size, run.result.steps_per_rank = rank, world, per_rank
        run.train_all(batch_fn, stages, resume)
        ctx.finish()
    return run.result


class _Run:
    """The state of one ``fit`` call: context, progress, checkpoint folder and the result being built."""

    def __init__(self, model: Trainable, ctx: Any, train: TrainConfig, root: Path, seed: int, rank: int, tracker, hook):
        self.model, self.ctx, self.train, self.root, self.seed, self.rank = model, ctx, train, root, seed, rank
        self.hook, self.world = hook, distributed.get_world_size()
        self.layout = ckpt.model_layout(model.networks)
        self.progress = _Progress(train.log_every, tracker, rank == 0)
        self.result = FitResult()
        self.amp = _AMP_DTYPES.get(train.precision)
        self.in_a_row = 0  # consecutive steps with a non-finite loss (fp16)

    def train_all(self, batch_fn: BatchFn, stages: list[Stage], resume: bool) -> None:
        start_stage, start_step = self.resume() if resume else (0, 0)
        for si in range(start_stage, len(stages)):
            first = start_step if si == start_stage else 0
            if first < stages[si].steps:
                self.run_stage(batch_fn, si, stages[si], first)
        self.result.skipped_updates = dict(self.ctx.skipped)
        if self.ctx.skipped:
            self.progress.tracker.log_metrics({f"skipped_updates.{n}": c for n, c in self.ctx.skipped.items()})

    def resume(self) -> tuple[int, int]:
        latest = ckpt.find_latest(self.root)
        if latest is None:
            return 0, 0
        state = ckpt.load(latest, self.ctx, self.model, self.layout, self.rank)
        res = self.result
        res.history, res.final_losses = list(state["history"]), dict(state["final_losses"])
        res.steps, res.checkpoint, res.resumed_from = state["global_step"], latest, latest
        res.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.progress.restore(state.get("progress", {}))
        if self.rank == 0:
            log.info("resumed from %s (stage %d, step %d)", latest, state["stage_index"], state["step"])
        return state["stage_index"], state["step"]

    def run_stage(self, batch_fn: BatchFn, si: int, stage: Stage, first: int) -> None:
        _set_stage_modes(self.ctx, self.model, stage)
        key, pin = (self.seed, self.rank, si), self.ctx.device.type == "cuda"
        with Batches(batch_fn, key, stage.steps, self.train.prefetch, first, pin, self.train.loader_workers) as batches:
            self._run_steps(batches, si, stage, first)

    def _run_steps(self, batches: Batches, si: int, stage: Stage, first: int) -> None:
        every = self.train.checkpoint_every
        for step in range(first, stage.steps):
            values, finite, stop = self._step(batches, si, stage, step)
            res = self.result
            res.steps += 1
            if finite:
                res.final_losses, self.in_a_row = values, 0
            else:
                self._skipped(stage, step, values)
            entry = self.progress.update(stage, step, res.steps, values if finite else None)
            if entry is not None:
                res.history.append(entry)
            if self.world == 1:  # one rank, no agreement needed: a signal that came during the logging counts too
                stop = self.hook.requested
            if step + 1 == stage.steps or (every > 0 and (step + 1) % every == 0) or stop:
                self._save(si, stage, step, values)
            if stop or (self.world == 1 and self.hook.requested):  # ...and one during the save just written
                self._stop(stage, step)

    def _save(self, si: int, stage: Stage, step: int, values: dict[str, float]) -> None:
        res = self.result
        meta = {"stage_index": si, "stage_name": stage.name, "step": step + 1, "global_step": res.steps}
        meta |= {"history": res.history, "final_losses": res.final_losses, "progress": self.progress.state()}
        meta["nonfinite_steps"] = res.nonfinite_steps
        res.checkpoint = ckpt.save(self.root, self.ctx, self.model, self.layout, meta, self.train.keep_checkpoints)

    def _skipped(self, stage: Stage, step: int, values: dict[str, float]) -> None:
        """An fp16 step with a non-finite loss (torch engine): its grad scalers skipped the update, as they do for
        inf/NaN gradients; it is counted, logged and left out of the means, and the run stops when it persists."""
        res = self.result
        res.nonfinite_steps += 1
        self.in_a_row += 1
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not np.isfinite(v)) or "on another rank"
        if self.in_a_row >= _MAX_SKIPPED_IN_A_ROW:
            raise TrainingError(
                f"stage {stage.name!r} step {step}: losses not finite for {self.in_a_row} steps in a row under fp16 "
                f"({bad}); the grad scalers cannot recover this run (try train.precision=fp32 to find the cause)"
            )
        if self.rank == 0:
            log.warning("stage %r step %d: non-finite loss under fp16 (%s): update skipped", stage.name, step, bad)
            self.progress.tracker.log_metrics({"nonfinite_steps": res.nonfinite_steps}, step=res.steps)

    def _stop(self, stage: Stage, step: int) -> None:
        """After the checkpoint at the signal: hand over to the job's handler (which requeues and exits)."""
        if self.rank == 0:
            log.warning(
                "%s received: stopped after stage %r step %d (global step %d), checkpoint %s",
                self.hook.signum.name, stage.name, step + 1, self.result.steps, self.result.checkpoint,
            )  # fmt: skip
        self.hook.hand_over()

    def _step(self, batches: Batches, si: int, stage: Stage, step: int) -> tuple[dict[str, float], bool, bool]:
        ctx, device = self.ctx, self.ctx.device
        _sync(device, self.train.sync_timing)
        t0 = time.perf_counter()
        batch = _to_device(batches.get(step), device)
        t1 = time.perf_counter()
        ctx.step = step
        ctx.generator.manual_seed(derive_seed(self.seed, self.rank, si, step, 1))
        amp = torch.autocast(device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()
        with amp:
            losses = self.model.train_step(ctx, stage, batch)
        values, finite, stop = _check_losses(losses, stage, step, self.hook.requested, ctx.skips_nonfinite)
        _sync(device, self.train.sync_timing)
        self.result.timings.append(StepTiming(stage.name, step, t1 - t0, time.perf_counter() - t1))
        return values, finite, stop
