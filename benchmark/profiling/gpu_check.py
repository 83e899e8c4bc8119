"""Is this node ready for a study's jobs? What ``launchers/gpu_check.py`` runs first on a new cluster or GPU.

Three checks, each a row of one table (printed, and written as CSV):

1. ``build``: the torch build carries kernels for every visible GPU (``torch.cuda.get_arch_list()`` against
   ``torch.cuda.get_device_capability()``); if not, a one-line ``ConfigError`` names the wheels to install (cu126
   for Volta, sm_70, which the cu128 wheels dropped; cu128 for Turing, sm_75, and newer). Without a GPU the row
   says that none was found, and the rest runs on the CPU (so CI exercises it).
2. ``nccl``: an all-reduce across the visible GPUs, one process per GPU (``distributed.all_reduce_check``), its
   sum checked and its bus bandwidth measured; skipped, with the reason, below two GPUs.
3. ``step``: one training stage of every network the study trains (its generators and the segmentation U-Net) at
   the study's shape, batch size, engine and precision, through the engine (``benchmark.profiling.measure``:
   a FLOP-counting warm-up step, then timed steps): median step time and peak memory (on a GPU the stage's
   ``torch.cuda.max_memory_allocated``; on the CPU the process's peak RSS so far, which includes earlier rows).
   A network that runs out of GPU memory gets its row and the next one is tried.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmark.config import StudyConfig, to_dict
from benchmark.engine.device import arch_supported
from benchmark.errors import BenchmarkError, ConfigError

COLUMNS = (
    "check", "network", "stage", "status", "step_s", "peak_mem_gib", "device", "precision", "shape", "batch_size",
    "detail",
)  # fmt: skip
WHEEL_INDEX = "https://download.pytorch.org/whl"


def wheel_for(capability: tuple[int, int]) -> str:
    """The PyTorch CUDA wheels that carry kernels for a GPU of ``capability``.

    Args:
        capability: ``torch.cuda.get_device_capability()``, e.g. ``(7, 0)`` for a V100.

    Returns:
        ``cu126`` below sm_75 (Volta and older: the cu128 wheels dropped sm_70), else ``cu128``.
    """
    return "cu126" if tuple(capability) < (7, 5) else "cu128"


def _row(check: str, status: str, detail: str = "", **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, "")
    row.update(check=check, status=status, detail=detail, **values)
    return row


def check_build() -> dict[str, Any]:
    """The ``build`` row: every visible GPU is covered by this torch build's architectures.

    Returns:
        The row (``status`` ``ok`` or ``no GPU``). Raises ``ConfigError`` naming the GPU, its architecture, the
        build's list and the wheels to install when a GPU is not covered.
    """
    version = torch.__version__
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        detail = f"no GPU found on {socket.gethostname()} (torch {version}, CUDA {torch.version.cuda}): CPU numbers"
        return _row("build", "no GPU", detail, device="cpu")
    arch_list = torch.cuda.get_arch_list()
    names = []
    for index in range(torch.cuda.device_count()):
        capability = tuple(torch.cuda.get_device_capability(index))
        name = torch.cuda.get_device_name(index)
        if not arch_supported(capability, arch_list):
            wheel, base = wheel_for(capability), version.split("+")[0]
            raise ConfigError(
                f"cuda:{index} {name} (sm_{capability[0]}{capability[1]}) is not among the architectures of torch "
                f"{version} ({' '.join(arch_list) or 'none'}); install the {wheel} wheels: "
                f'TORCH_SPEC="torch=={base} --index-url {WHEEL_INDEX}/{wheel}" (README, Quick start)'
            )
        names.append(f"{name} (sm_{capability[0]}{capability[1]})")
    detail = f"torch {version}, CUDA {torch.version.cuda}, arch {' '.join(arch_list)}: " + ", ".join(names)
    return _row("build", "ok", detail, device=torch.cuda.get_device_name(0))


def check_nccl(gpus: int) -> dict[str, Any]:
    """The ``nccl`` row: an all-reduce over ``gpus`` processes, one per GPU (skipped below two).

    Args:
        gpus: visible GPUs.

    Returns:
        The row: ``ok`` with the bus bandwidth, ``skipped`` with the reason, or ``failed`` with the error.
    """
    if gpus < 2:
        return _row("nccl", "skipped", f"{gpus or 'no'} GPU visible: nothing to all-reduce across")
    from benchmark.engine.distributed import all_reduce_check

    try:
        result = all_reduce_check(gpus, "nccl")
    except ConfigError as exc:
        return _row("nccl", "failed", str(exc))
    status = "ok" if result["ok"] else "failed"
    detail = f"{gpus} GPUs, {result['bytes'] / 2**20:.0f} MiB: {result['seconds'] * 1e3:.2f} ms, "
    detail += f"bus bandwidth {result['bus_bytes_per_s'] / 1e9:.1f} GB/s" + ("" if result["ok"] else ", WRONG SUM")
    return _row("nccl", status, detail)


def _point(model: str, cfg: StudyConfig, device: str, steps: int, out_dir: Path) -> Any:
    from benchmark.profiling.measure import ProfilePoint

    batch = cfg.segmentation.batch_size if model == "unet" else cfg.train.batch_size
    return ProfilePoint(
        model=model, shape=tuple(cfg.preprocess.shape), batch_size=batch, engine=cfg.train.engine,
        zero_stage=cfg.train.zero_stage if cfg.train.engine == "deepspeed" else None, precision=cfg.train.precision,
        steps=steps, warmup=1, threads=cfg.train.threads, device=device, config=to_dict(cfg), out_dir=str(out_dir),
    )  # fmt: skip


def check_steps(cfg: StudyConfig, models: Sequence[str], device: str, steps: int, out_dir: Path) -> list[dict]:
    """The ``step`` rows: a short training burst of every model, one row per training stage.

    Args:
        cfg: the study config (shape, batch sizes, engine, precision, the models' sections).
        models: ``unet`` and/or generator names.
        device: ``cuda`` or ``cpu``.
        steps: timed steps per stage (>= 2; one FLOP-counting warm-up step comes first).
        out_dir: scratch folder for the engine's checkpoints (removed after each model).

    Returns:
        One row per model and stage; a model that fails (out of memory included) gives one ``failed`` row.
    """
    from benchmark.profiling.measure import measure

    rows = []
    common = {"device": device, "precision": cfg.train.precision, "shape": "x".join(map(str, cfg.preprocess.shape))}
    for model in models:
        point = _point(model, cfg, device, steps, out_dir)
        common["batch_size"] = point.batch_size
        try:
            measured = measure(point)
        except (torch.OutOfMemoryError, RuntimeError, BenchmarkError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            status = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else "failed"
            rows.append(_row("step", status, first, network=model, **common))
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        for m in measured:
            peak = m["peak_mem_bytes"] / 2**30
            rows.append(_row(
                "step", "ok", m["peak_mem_source"], network=model, stage=m["stage"], step_s=m["step_s_median"],
                peak_mem_gib=peak, **{**common, "device": m["device_name"]},
            ))  # fmt: skip
    return rows


def study_models(cfg: StudyConfig, generators: Sequence[str] | None = None) -> list[str]:
    """The networks a study trains: its generators (those its arms name, else every registered one; or
    ``generators``) and the segmentation U-Net (``unet``).

    Args:
        cfg: the study config.
        generators: explicit generator names (``--generators``), checked against the registry.
    """
    from benchmark.generators import GENERATORS
    from benchmark.segmentation.arms import named_generators

    names = list(generators) if generators else list(named_generators(cfg.segmentation.arms) or GENERATORS)
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise ConfigError(f"--generators: {unknown[0]!r} is not one of {', '.join(sorted(GENERATORS))}")
    return [*names, "unet"]


def run_gpu_check(
    cfg: StudyConfig,
    out_dir: str | Path,
    *,
    generators: Sequence[str] | None = None,
    steps: int = 2,
    device: str = "auto",
) -> tuple[list[dict[str, Any]], Path]:
    """All three checks; the table is returned and written as ``<out_dir>/gpu_check.csv``.

    Args:
        cfg: the study config (``preprocess.shape``, ``train``, the models' sections).
        out_dir: where the CSV goes (and the engine's scratch checkpoints, removed after each model).
        generators: generator names to step (default: the study's).
        steps: timed steps per stage.
        device: ``auto`` (the GPU when one is visible), ``cuda`` or ``cpu``.

    Returns:
        The rows and the CSV path. Raises ``ConfigError`` when the torch build cannot run a visible GPU, or
        ``device=cuda`` finds none.
    """
    import pandas as pd

    from benchmark.atomic import write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = check_build()
    gpus = torch.cuda.device_count() if build["status"] == "ok" else 0
    if device == "cuda" and gpus == 0:
        raise ConfigError(f"--device cuda: {build['detail']}")
    chosen = "cuda" if gpus and device != "cpu" else "cpu"
    models = study_models(cfg, generators)
    rows = [build, check_nccl(gpus), *check_steps(cfg, models, chosen, steps, out_dir / "scratch")]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    path = write_text_atomic(out_dir / "gpu_check.csv", frame.to_csv(index=False))
    return rows, path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a short fixed-width table (step time in ms, peak memory in GiB).

    Args:
        rows: ``run_gpu_check``'s rows.
    """
    lines = [f"{'check':6} {'network':13} {'stage':12} {'status':13} {'step ms':>9} {'peak GiB':>9}  detail"]
    for r in rows:
        ms = f"{r['step_s'] * 1e3:9.1f}" if isinstance(r["step_s"], float) and math.isfinite(r["step_s"]) else " " * 9
        gib = f"{r['peak_mem_gib']:9.2f}" if isinstance(r["peak_mem_gib"], float) else " " * 9
        lines.append(f"{r['check']:6} {r['network']:13} {r['stage']:12} {r['status']:13} {ms} {gib}  {r['detail']}")
    return "\n".join(lines)
