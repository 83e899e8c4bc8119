"""What the profiler builds and reads around a measurement: the model, its batches, the environment, GPU peaks.

The bare reference loop lives here too: the model's own ``train_step`` driven by a plain loop with plain
optimizers (``_BareContext``), no engine, no checkpointing, no tracking, a preloaded batch.

The model is the one the study trains: ``unet`` is the segmentation U-Net of the ``segmentation`` section, any
other name a registered generator built from ``generators.<name>`` (or its ``tiny()`` config). Warm-up schedules
a generator's config declares (``GeneratorConfig.warmups()``, e.g. the discriminator start of SPADE-LDM's
autoencoder) are set to 0, so the few timed steps are steady-state steps; the row records this in
``model_overrides``. Sampling is timed for the samplers the config declares (``GeneratorConfig.samplers()``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import math
import platform
import re
import socket
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import StudyConfig, read_yaml
from benchmark.engine.backends import penalty_grad
from benchmark.errors import ConfigError
from benchmark.generators.base import Generator

PEAKS_FILE = Path(__file__).resolve().parents[2] / "configs" / "gpu_peaks.yaml"
UNET = "unet"


def build_model(point: Any, cfg: StudyConfig) -> tuple[Any, int, dict[str, Any]]:
    """The trainable of ``point.model`` on ``point.shape``.

    Args:
        point: a ``ProfilePoint``.
        cfg: the study config holding the model's section.

    Returns:
        ``(trainable, label classes of its batches, config fields the profiler changed)``.
    """
    if point.model == UNET:
        from benchmark.segmentation.model import TARGET_CLASSES, Segmenter

        seg = _apply_set(segmentation_config(point, cfg), point.model_set, "segmentation")
        n = TARGET_CLASSES[seg.target]
        return Segmenter(seg, np.ones(n, dtype=np.float32)), n, {}
    from benchmark.generators import GENERATORS

    if point.model not in GENERATORS:
        raise ConfigError(f"--model {point.model!r}: choose {UNET!r} or a generator: {', '.join(sorted(GENERATORS))}")
    spec = GENERATORS[point.model]
    gcfg = spec.config_cls.tiny() if point.tiny else cfg.generators[point.model]
    overrides = {name: 0 for name, steps in gcfg.warmups().items() if steps != 0}
    gcfg = _apply_set(dataclasses.replace(gcfg, **overrides), point.model_set, f"generators.{point.model}")
    n = cfg.composite.num_classes
    model = spec.build(gcfg, n, tuple(point.shape))
    if gcfg.needs_segmenter():  # the consistency loss's frozen U-Net: untrained weights cost what trained ones do
        from benchmark.segmentation.model import build_unet

        model.set_segmenter(build_unet(dataclasses.replace(cfg.segmentation, target="cavity")))
    return model, n, overrides


def _apply_set(section: Any, values: dict[str, Any], where: str) -> Any:
    """``section`` with fields replaced by ``values`` (typed by the section's annotations; unknown keys raise)."""
    from benchmark.config import build_section, to_dict

    if not values:
        return section
    return build_section(type(section), {**to_dict(section), **values}, where)


def segmentation_config(point: Any, cfg: StudyConfig) -> Any:
    """The ``segmentation`` section as profiled: the point's batch size, whole volumes (no patch cropping).

    The network step is what is profiled: its in-memory batches are not augmented, also where the study augments
    on the GPU (``augment.device: cuda``; that augmentation's GPU time is not part of the profiled step).
    """
    seg = cfg.segmentation
    if point.tiny:
        seg = dataclasses.replace(seg, channels=(4, 8, 16, 32, 64), num_res_units=1)
    augment = dataclasses.replace(seg.augment, device="cpu")
    return dataclasses.replace(seg, batch_size=point.batch_size, patch=None, augment=augment)


def _channels_last(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.contiguous(memory_format=torch.channels_last_3d) if v.is_floating_point() and v.ndim == 5 else v
        for k, v in batch.items()
    }


def memory_batch(point: Any, label_classes: int) -> dict[str, torch.Tensor]:
    """A fixed in-memory batch: normal images and uniformly drawn labels of the point's shape (seeded)."""
    gen = torch.Generator().manual_seed(point.seed)
    size = (point.batch_size, 1, *point.shape)
    batch = {
        "image": torch.randn(size, generator=gen),
        "label": torch.randint(0, label_classes, size, generator=gen, dtype=torch.int64),
    }
    return _channels_last(batch) if point.channels_last else batch


def loader_batch_fn(point: Any, cfg: StudyConfig, label_classes: int):
    """The study's data path: the cached preprocessed volumes (``load_arrays``) and the model's own batch function.

    Volumes are preprocessed to ``point.shape`` (cached under ``data.cache_dir``). The U-Net gets
    ``segmentation.train.make_batch_fn`` (with its augmentations), a generator ``generators.train.make_batch_fn``
    on the expert label maps (values 0..2; the study's composite maps only add label values, not work).
    """
    from benchmark.data.pipeline import load_arrays, prepare_dataset

    data_cfg = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, shape=tuple(point.shape)))
    arrays = load_arrays(prepare_dataset(data_cfg))
    if point.model == UNET:
        from benchmark.segmentation.arms import ArmItem
        from benchmark.segmentation.model import make_target
        from benchmark.segmentation.train import make_batch_fn

        seg = segmentation_config(point, cfg)
        items = [ArmItem(a.image, make_target(a.label, seg.target), "real", cid) for cid, a in arrays.items()]
        fn = make_batch_fn(items, seg)
    else:
        from benchmark.generators.train import make_batch_fn

        fn = make_batch_fn([a.image for a in arrays.values()], [a.label for a in arrays.values()], point.batch_size)
    if not point.channels_last:
        return fn
    return lambda step, rng: _channels_last(fn(step, rng))


class PrecisionCtx:
    """``PrecisionCtx(device, precision)()`` is the autocast context the engine uses for that precision."""

    def __init__(self, device: torch.device, precision: str):
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def __call__(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


class _BareContext:
    """A plain PyTorch ``StepContext`` for the reference loop: the model's optimizers, nothing else."""

    def __init__(self, model: Any, stage: Any, device: torch.device, precision: str, total: int, flags: dict):
        self.device, self.step, self.ranks = device, 0, 1
        self.generator = torch.Generator(device=device)
        self.nets = model.networks
        self._flags = flags  # requires_grad as the model built it (earlier stages froze other networks since)
        self.opts, self.scheds = {}, {}
        for name in stage.networks:
            params = [p for p, f in zip(self.nets[name].parameters(), self._flags[name], strict=True) if f]
            self.opts[name], self.scheds[name] = model.make_optimizer(name, params, total)
        self.scalers = {n: torch.amp.GradScaler(device.type) for n in self.opts} if precision == "fp16" else {}
        for name, net in self.nets.items():
            self.set_requires_grad(name, name in stage.networks)
            net.train(name in stage.networks)

    def module(self, name: str) -> torch.nn.Module:
        return self.nets[name]

    def unwrapped(self, name: str) -> torch.nn.Module:
        return self.nets[name]

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def set_requires_grad(self, name: str, flag: bool) -> None:
        for p, initial in zip(self.nets[name].parameters(), self._flags[name], strict=True):
            p.requires_grad_(flag and initial)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        (self.scalers[name].scale(loss) if name in self.scalers else loss).backward()

    def penalty_grad(self, name: str, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return penalty_grad(self.scalers.get(name), output, inputs)

    def optimizer_step(self, name: str) -> None:
        if name in self.scalers:
            self.scalers[name].step(self.opts[name])
            self.scalers[name].update()
        else:
            self.opts[name].step()
        if self.scheds[name] is not None:
            self.scheds[name].step()
        self.opts[name].zero_grad(set_to_none=True)


def bare_loop(prof: Any, batch: dict[str, torch.Tensor], point: Any, device: torch.device) -> None:
    """The reference: every stage of ``prof``'s model for ``warmup + steps + 1`` steps, driven by a plain loop.

    Args:
        prof: the profiling wrapper (``benchmark.profiling._Profiled``) whose ``train_step`` records the timings.
        batch: the preloaded batch, on ``device``.
        point: the ``ProfilePoint`` (steps, precision, seed).
        device: where the networks are.
    """
    from benchmark.engine.batches import derive_seed, seed_everything

    n = point.warmup + point.steps + 1
    amp = PrecisionCtx(device, point.precision)
    # the engine's seeding (global RNGs once, the context's generator every step): the reference computes the very
    # same numbers as the suite, so both meet the same values (denormals slow CPU kernels down by 30% and more)
    seed_everything(point.seed, 0)
    flags = {n: [p.requires_grad for p in net.parameters()] for n, net in prof.networks.items()}
    for si, stage in enumerate(prof.stages()):
        ctx = _BareContext(prof.model, stage, device, point.precision, n, flags)
        for step in range(n):
            prof.batch_t = time.perf_counter()
            ctx.step = step
            ctx.generator.manual_seed(derive_seed(point.seed, 0, si, step, 1))
            with amp():
                prof.train_step(ctx, stage, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        prof.optimizers.update({k: [v] for k, v in ctx.opts.items()})
        prof.end_stage()
        prof._stage = None


def opt_state_bytes(optimizers: dict[str, list[torch.optim.Optimizer]], names: tuple[str, ...]) -> int:
    """Bytes of the tensors held in the ``state`` of the optimizers of networks ``names`` (this rank only)."""
    total = 0
    for name in names:
        for opt in optimizers.get(name, []):
            for state in opt.state.values():
                total += sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# the profiling CSV has columns for these samplers only (benchmark.profiling.results.COLUMNS)
SAMPLER_COLUMNS = ("ddim", "ddpm")


def sampling_times(model: Any, batch: dict[str, torch.Tensor], device: torch.device):
    """Seconds to generate one volume end to end (decoding included), for each sampler the generator declares.

    Args:
        model: the profiled trainable; only a ``Generator`` is timed.
        batch: its batch (the first label map is sampled).
        device: where the networks are.

    Returns:
        ``(values, reasons)`` for the ``sample_*`` / ``*_steps`` columns.
    """
    columns = ("sample_s", *(f"sample_{k}_s" for k in SAMPLER_COLUMNS), *(f"{k}_steps" for k in SAMPLER_COLUMNS))
    if not isinstance(model, Generator):
        return {}, dict.fromkeys(columns, "not a generator")
    label = batch["label"][:1].to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def timed(**kwargs: Any) -> float:
        _sync(device)
        t0 = time.perf_counter()
        model.sample(label, generator=gen, **kwargs)
        _sync(device)
        return time.perf_counter() - t0

    declared = model.cfg.samplers()
    if not declared:
        timed()  # warm-up
        why = "single-pass generator: no DDPM/DDIM sampler"
        return {"sample_s": timed()}, dict.fromkeys(columns[1:], why)
    default = model.cfg.default_sampler()
    if default not in declared:
        raise ConfigError(f"{type(model.cfg).__name__}.default_sampler(): {default!r} is not one of {list(declared)}")
    timed(sampler=min(declared, key=declared.__getitem__), steps=2)  # warm-up (allocator, kernel selection)
    values: dict[str, Any] = {}
    for name in (k for k in declared if k in SAMPLER_COLUMNS):
        values[f"sample_{name}_s"], values[f"{name}_steps"] = timed(sampler=name), declared[name]
    key = f"sample_{default}_s"
    values["sample_s"] = values[key] if key in values else timed(sampler=default)
    why = {c: "the generator declares no such sampler" for c in columns if c not in values}
    return values, why


def _version(dist: str) -> Any:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return math.nan


@cache
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name`` on GPUs, ``cpu: <model name>`` on the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {_cpu_name()}"


def environment(device: torch.device) -> dict[str, Any]:
    """Environment columns: device, library versions, threads, host."""
    return {
        "device_type": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or math.nan,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else math.nan,
        "deepspeed_version": _version("deepspeed"),
        "monai_version": _version("monai"),
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
    }


@cache
def load_peaks(path: str = str(PEAKS_FILE)) -> list[dict[str, Any]]:
    """The GPU table of ``configs/gpu_peaks.yaml``: entries with ``name``, ``match`` (regex) and ``peaks``."""
    gpus = read_yaml(path).get("gpus")
    if not isinstance(gpus, list) or not gpus:
        raise ConfigError(f"{path}: needs a non-empty list 'gpus'")
    for i, entry in enumerate(gpus):
        if not isinstance(entry, dict) or not {"name", "match", "peaks"} <= set(entry):
            raise ConfigError(f"{path}: gpus[{i}] needs name, match and peaks")
    return gpus


def peak_dtype(precision: str) -> list[str]:
    """Peak table keys to use for a precision, in order of preference.

    fp32 convolutions run on TF32 tensor cores when cuDNN allows it (PyTorch's default), so their peak is TF32's.
    """
    if precision == "fp32":
        return ["tf32", "fp32"] if torch.backends.cudnn.allow_tf32 else ["fp32"]
    return [precision]


def peak_flops(device: torch.device, precision: str, achieved: float) -> tuple[dict[str, Any], dict[str, str]]:
    """Dense peak FLOP/s of this device for ``precision`` and the MFU, only for GPUs in the peak table.

    Returns:
        ``(values, reasons)`` for ``peak_flops_per_s``, ``peak_dtype`` and ``mfu``.
    """
    cols = ("peak_flops_per_s", "peak_dtype", "mfu")
    if device.type != "cuda":
        why = f"no dense peak for {device.type} devices: MFU is reported only for GPUs listed in {PEAKS_FILE.name}"
        return {}, dict.fromkeys(cols, why)
    name = device_name(device)
    entry = next((e for e in load_peaks() if re.search(e["match"], name, flags=re.IGNORECASE)), None)
    if entry is None:
        return {}, dict.fromkeys(cols, f"device {name!r} matches no entry of {PEAKS_FILE.name}")
    key = next((k for k in peak_dtype(precision) if k in entry["peaks"]), None)
    if key is None:
        return {}, dict.fromkeys(cols, f"{entry['name']} has no {precision} peak in {PEAKS_FILE.name}")
    peak = float(entry["peaks"][key])
    return {"peak_flops_per_s": peak, "peak_dtype": f"{entry['name']}:{key}", "mfu": achieved / peak}, {}
