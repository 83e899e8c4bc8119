"""The cost plan of a study: memory, FLOPs, steps and GPU-hours per job kind, before any data or GPU is touched.

Per trained model (a generator or the segmentation U-Net) and training stage:

- parameters: counted on networks built at the study's shape (some networks' sizes depend on it);
- FLOPs per step and activation peak: one short CPU training step at a reduced shape (every axis a quarter of the
  study's, at least 32 voxels, as divisible as the study's axis up to 64), run through the model's own
  ``train_step`` at the job's batch and precision, then scaled linearly in voxels. FLOPs come from the profiler's
  counter; the activation peak is the step's resident-memory peak above the memory held before it (``VmHWM`` reset
  through ``/proc/self/clear_refs``; allocations of 64 KiB and more served by ``mmap`` and free heap pages trimmed,
  so that the resident set follows the live tensors) minus the gradients of the stage's largest network.
  Convolutions scale exactly with voxels; attention (quadratic in tokens) and shape-dependent layers only roughly;
- per-rank state: fp32 weights of every network of the model (4 B/param), the stepping networks' fp32 gradients
  (4 B), Adam's two fp32 moments (8 B) and, under mixed precision with DeepSpeed, an fp32 master copy (4 B); ZeRO-1
  shards the moments and master copy over the job's ranks, ZeRO-2 the gradients too;
- total: state + activations x ``FRAGMENTATION`` + ``CONTEXT_BYTES`` (CUDA context, cuDNN workspace).

Wall time is ``steps per rank x FLOPs per step / (peak FLOP/s x MFU)`` with the peak of ``configs/gpu_peaks.yaml``.
The job list and the step counts are the plan's input (``benchmark.profiling.plan_jobs``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from benchmark.config import StudyConfig
from benchmark.errors import ConfigError
from benchmark.profiling.flops import count_flops
from benchmark.profiling.model import PEAKS_FILE, PrecisionCtx, _BareContext, build_model, load_peaks, memory_batch
from benchmark.profiling.model import peak_dtype as peak_keys

CONTEXT_BYTES = int(0.5 * 2**30)
# fp16/bf16 stages are measured by an fp32 CPU step: CPU autocast runs 5-55x slower than fp32 here (the paper's
# SPADE-LDM autoencoder step did not finish in 10 min) and its op lists are not CUDA's; the activations of a
# half-precision step are taken as half of fp32's (an estimate: norms and losses stay fp32 under autocast)
HALF_ACTIVATIONS = 0.5
FRAGMENTATION = 1.15
DEFAULT_MFU = 0.3
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StageCost:
    """What one training step of one stage of a model costs on one rank at the study's shape.

    Args:
        model / stage: the model (``unet`` or a generator) and its stage.
        networks: the networks that step in this stage.
        params_all / params_stage: parameters of all the model's networks / of the stepping ones.
        flops: FLOPs of one step (scaled from ``shape_measured``).
        activation_bytes: activation peak of one step (scaled from ``shape_measured``).
        shape / shape_measured: the study's (or patch) shape and the reduced shape actually run.
        batch / precision: per-rank batch and precision.
        config_steps: the stage's own step count (used when no epochs are set).
    """

    model: str
    stage: str
    networks: tuple[str, ...]
    params_all: int
    params_stage: int
    flops: float
    activation_bytes: float
    shape: tuple[int, ...]
    shape_measured: tuple[int, ...]
    batch: int
    precision: str
    config_steps: int

    @property
    def method(self) -> str:
        scale = math.prod(self.shape) / math.prod(self.shape_measured)
        half = f", fp32 step, activations x{HALF_ACTIVATIONS:g} for {self.precision}"
        at = f"CPU step at {'x'.join(map(str, self.shape_measured))}, x{scale:g} in voxels"
        return at if self.precision == "fp32" else at + half


def reduced_shape(shape: tuple[int, ...], divisor: int = 4, floor: int = 32, keep: int = 64) -> tuple[int, ...]:
    """The shape the plan runs: every axis ``axis // divisor``, at least ``floor``, at most the axis, rounded up to
    keep the axis's divisibility by powers of two up to ``keep`` (networks with six downsamplings need 64)."""

    def one(s: int) -> int:
        m = math.gcd(s, keep)
        return min(s, -(-max(floor, s // divisor) // m) * m)

    return tuple(one(s) for s in shape)


def _status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"{key}:\s+(\d+) kB", text)
    if found is None:
        raise ConfigError(f"/proc/self/status has no {key}: the plan's memory measurement needs Linux")
    return int(found.group(1)) * 1024


@contextlib.contextmanager
def _mmap_large_allocations(threshold: int = 64 * 1024):
    """glibc serves allocations >= ``threshold`` with mmap (freed memory leaves the resident set at once)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim, m_mmap = -1, -3  # mallopt's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD
    libc.mallopt(m_mmap, threshold)
    libc.mallopt(m_trim, threshold)
    try:
        yield
    finally:
        libc.mallopt(m_mmap, 128 * 1024)  # glibc's initial values
        libc.mallopt(m_trim, 128 * 1024)


def peak_bytes(fn) -> int:
    """Peak resident memory ``fn`` adds on the CPU above what the process held before it (bytes).

    Args:
        fn: the work to measure (a training step); call it once before so that lazily made state exists.
    """
    try:
        with _mmap_large_allocations():
            # free heap pages kept by malloc would be reused unseen by the resident set: hand them back first
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
            before = _status_bytes("VmRSS")
            fn()
            return max(0, _status_bytes("VmHWM") - before)
    except OSError as exc:  # no glibc, or a read-only /proc (some containers)
        raise ConfigError(
            f"--plan: the memory measurement needs Linux with glibc and a writable /proc ({exc})"
        ) from None


def _count(nets: dict[str, torch.nn.Module]) -> dict[str, int]:
    return {n: sum(p.numel() for p in net.parameters()) for n, net in nets.items()}


def model_costs(
    model: str, cfg: StudyConfig, shape: tuple[int, ...], batch: int, precision: str, measured: tuple[int, ...]
) -> list[StageCost]:  # fmt: skip
    """Per-stage costs of one model: parameters at ``shape``, one CPU step per stage at ``measured``.

    Args:
        model: ``unet`` or a registered generator.
        cfg: the study config (the model's section).
        shape: the volume (or patch) the job trains on.
        batch: per-rank batch.
        precision: ``fp32``, ``fp16`` or ``bf16``; the measured step runs in fp32 and a half-precision stage's
            activations are scaled by ``HALF_ACTIVATIONS``.
        measured: the reduced shape the step runs at (``reduced_shape``).
    """
    point = SimpleNamespace(
        model=model, tiny=False, model_set={}, shape=measured, batch_size=batch, seed=0, channels_last=False
    )
    # built on the CPU (schedulers call .item(), which meta tensors refuse); sizes are all that is kept
    sizes = _count(build_model(SimpleNamespace(**{**vars(point), "shape": shape}), cfg)[0].networks)
    torch.manual_seed(0)
    small, classes, _ = build_model(point, cfg)
    batch_t = memory_batch(point, classes)
    amp = PrecisionCtx(torch.device("cpu"), "fp32")
    flags = {n: [p.requires_grad for p in net.parameters()] for n, net in small.networks.items()}
    scale = math.prod(shape) / math.prod(measured)
    act_scale = scale * (1.0 if precision == "fp32" else HALF_ACTIVATIONS)
    out = []
    for stage in small.stages():
        ctx = _BareContext(small, stage, torch.device("cpu"), "fp32", 10, flags)

        def step(ctx=ctx, stage=stage) -> None:
            with amp():
                small.train_step(ctx, stage, batch_t)
            ctx.step += 1

        with _mmap_large_allocations():  # the warm-up's freed blocks are then unmapped, not kept by malloc
            flops = count_flops(step)  # also the warm-up: optimizer state exists before the measured step
        # one network steps at a time (its gradients are freed after its update): the largest one's are in the peak
        grads = max(  # a stage that steps no network (labels2image fits statistics) has none
            (4 * sum(p.numel() for p in small.networks[n].parameters() if p.requires_grad) for n in stage.networks),
            default=0,
        )
        act = max(0, peak_bytes(step) - grads)
        out.append(StageCost(
            model=model, stage=stage.name, networks=tuple(stage.networks), params_all=sum(sizes.values()),
            params_stage=sum(sizes[n] for n in stage.networks), flops=flops * scale, activation_bytes=act * act_scale,
            shape=tuple(shape), shape_measured=tuple(measured), batch=batch, precision=precision,
            config_steps=stage.steps,
        ))  # fmt: skip
    return out


def smallest_costs(
    model: str, cfg: StudyConfig, shape: tuple[int, ...], batch: int, precision: str, costs=None
) -> list[StageCost]:  # fmt: skip
    """``model_costs`` at the smallest shape the model trains at, from ``reduced_shape(shape)`` up: a network whose
    deepest level would be one voxel there (SPADE-LDM at the paper's 256x256x64 has a 4x4x1 bottleneck, 1x1x1 at
    64x64x64, where instance norm refuses to train) is measured after doubling the most reduced axis, up to
    ``shape`` itself, where an error is the model's own.

    Args:
        model / cfg / shape / batch / precision: as ``model_costs``.
        costs: the measuring function (``model_costs``; tests pass a fake).
    """
    measured = reduced_shape(shape)
    while True:
        try:
            return (costs or model_costs)(model, cfg, shape, batch, precision, measured)
        except (ValueError, RuntimeError, ConfigError):
            if tuple(measured) == tuple(shape):
                raise
        axis = max(range(len(shape)), key=lambda i: shape[i] / measured[i])
        measured = tuple(min(shape[i], 2 * m) if i == axis else m for i, m in enumerate(measured))


def state_bytes(cost: StageCost, *, zero_stage: int, ranks: int, deepspeed: bool) -> dict[str, float]:
    """Per-rank bytes of weights, gradients and optimizer state (Adam) of one stage under a ZeRO stage.

    Args:
        cost: the stage.
        zero_stage: 0 (nothing sharded), 1 (moments and master copy sharded), 2 (gradients too).
        ranks: the job's ranks (the shards' count).
        deepspeed: DeepSpeed keeps an fp32 master copy under mixed precision.
    """
    p = cost.params_stage
    master = 4 * p if deepspeed and cost.precision != "fp32" else 0
    shard = ranks if zero_stage >= 1 else 1
    return {
        "weights": 4.0 * cost.params_all,
        "grads": 4.0 * p / (ranks if zero_stage >= 2 else 1),
        "optimizer": (8.0 * p + master) / shard,
    }


def total_bytes(cost: StageCost, state: dict[str, float], *, activation_factor: float = 1.0) -> float:
    """Per-rank peak estimate: state + activations x ``FRAGMENTATION`` + the CUDA context."""
    return sum(state.values()) + cost.activation_bytes * activation_factor * FRAGMENTATION + CONTEXT_BYTES


def gpu_entry(name: str | None, constraint: str | None, path: Path = PEAKS_FILE) -> dict[str, Any]:
    """The ``configs/gpu_peaks.yaml`` entry the plan costs on: ``name`` (``--plan-gpu``), else the one whose
    ``constraints`` hold the cluster's ``constraint``.

    Args:
        name: an entry name, or None.
        constraint: ``cluster.constraint`` of the cluster config.
        path: the peak table.
    """
    gpus = load_peaks(str(path))
    if name is not None:
        entry = next((g for g in gpus if g["name"].lower() == name.lower()), None)
        if entry is None:
            raise ConfigError(f"--plan-gpu {name!r}: not in {path.name} ({', '.join(g['name'] for g in gpus)})")
    else:
        entry = next((g for g in gpus if constraint and constraint.lower() in g.get("constraints", [])), None)
        if entry is None:
            raise ConfigError(
                f"cluster.constraint {constraint!r} names no GPU of {path.name}; "
                f"pass --plan-gpu NAME ({', '.join(g['name'] for g in gpus)})"
            )
    if "memory_gb" not in entry:
        raise ConfigError(f"{path.name}: {entry['name']} needs memory_gb for the plan")
    return entry


def peak_for(entry: dict[str, Any], precision: str) -> float:
    """Dense peak FLOP/s of ``entry`` at ``precision`` (fp32 runs on TF32 where the GPU has it)."""
    key = next((k for k in peak_keys(precision) if k in entry["peaks"]), None)
    if key is None:
        raise ConfigError(f"{PEAKS_FILE.name}: {entry['name']} has no {precision} peak (precision: {precision})")
    return float(entry["peaks"][key])


# The activation-checkpointing key of each (model, stage) that has one, and its CPU-measured factor on the step's
# resident peak (one step at 64x64x32, fresh processes, tests/test_checkpointing.py for the stored activations):
# the autoencoder 461-507 -> 328-344 MiB; the U-Net (MONAI CheckpointUNet, whose outer level is recomputed whole)
# 75 -> 70 MiB. Taken as factors on the activation peak, rounded up.
CHECKPOINTING = {
    ("spade_ldm", "autoencoder"): ("generators.spade_ldm.ae_checkpointing", 0.75),
    ("unet", "segmentation"): ("segmentation.checkpointing", 0.95),
}


def fixes(cost: StageCost, state: dict[str, float], memory: float, batch: int) -> str:
    """The changes that bring a stage under ``memory`` bytes: fp16 autocast (activations ~0.5x, an estimate),
    activation checkpointing where the model has the key (``CHECKPOINTING``, measured factors), a smaller batch
    (activations scale with it)."""
    found = []
    if cost.precision == "fp32" and total_bytes(cost, state, activation_factor=0.5) <= memory:
        found.append("fp16 autocast (~0.5x activations)")
    key, factor = CHECKPOINTING.get((cost.model, cost.stage), (None, 1.0))
    if key is not None and total_bytes(cost, state, activation_factor=factor) <= memory:
        found.append(f"{key}: true (~{factor:g}x activation peak)")
    for b in range(batch - 1, 0, -1):
        if total_bytes(cost, state, activation_factor=b / batch) <= memory:
            found.append(f"batch {b}")
            break
    return "; ".join(found) or "none of fp16 / checkpointing / a smaller batch suffices alone"
