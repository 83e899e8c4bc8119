"""Loader throughput: samples/s per worker of the segmenter's data path at the paper's patch (the engine's loader).

The engine's ``Batches`` (forked torch ``DataLoader`` workers, batches built ahead, handed over in step order) runs
the segmenter's own ``make_batch_fn`` on random volumes of the paper's study shape (``configs/paper.yaml``:
256x256x64, random 128x128x64 patches, batch 2), with the paper's augmentations without elastic, with elastic at the
paper's probability and with elastic always on, for 1 and 2 workers. Where CUDA is available the same pipeline also
runs on the GPU (``segmentation.augment.device: cuda``: the workers only draw volumes and seeds, ``DeviceAugment``
augments them on the device). Each row also shows the cost plan's estimate (``benchmark.profiling.loader``).

    .venv/bin/python benchmarks/loader_throughput.py --samples 16      # writes benchmarks/loader_throughput.{csv,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.config import load_config
from benchmark.engine.batches import Batches
from benchmark.profiling.loader import sample_seconds
from benchmark.segmentation.arms import ArmItem
from benchmark.segmentation.augment import DeviceAugment
from benchmark.segmentation.train import make_batch_fn

HERE = Path(__file__).resolve().parent


def _items(shape: tuple[int, ...], n: int = 2) -> list[ArmItem]:
    rng = np.random.default_rng(0)
    items = []
    for k in range(n):
        label = (rng.random(shape) > 0.9).astype(np.int64)
        image = (label * 0.5 + rng.normal(0.0, 0.1, shape)).astype(np.float32)
        items.append(ArmItem(image, label, "real", f"c{k}"))
    return items


def _loader_run(items, seg, workers: int, samples: int, device: torch.device | None) -> float:
    """Seconds for ``samples`` samples through ``Batches`` (worker start-up included); on ``device`` when given."""
    steps = max(1, samples // seg.batch_size)
    augment = DeviceAugment(seg) if device is not None else None
    start = time.perf_counter()
    with Batches(make_batch_fn(items, seg), (0, 0, 0), steps, 2, 0, device is not None, workers) as batches:
        for step in range(steps):
            batch = batches.get(step)
            if augment is not None:
                augment({k: v.to(device, non_blocking=True) for k, v in batch.items()}, device)
    if device is not None:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _markdown(frame: pd.DataFrame) -> list[str]:
    cells = [list(map(str, frame.columns))] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    return (
        ["| " + " | ".join(r) + " |" for r in cells[:1]]
        + ["|" + "---|" * len(frame.columns)]
        + ["| " + " | ".join(r) + " |" for r in cells[1:]]
    )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "paper.yaml"))
    parser.add_argument("--samples", type=int, default=16, help="samples per measurement (batch 2: samples/2 steps)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(HERE / "loader_throughput"), help="writes OUT.csv and OUT.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    cfg = load_config(args.config)
    shape, seg = tuple(cfg.preprocess.shape), cfg.segmentation
    items = _items(shape)
    variants = {
        "no elastic": 0.0, f"elastic p={seg.augment.elastic:g} (paper config)": seg.augment.elastic, "elastic p=1": 1.0,
    }  # fmt: skip
    rows = []
    for name, p in variants.items():
        run_seg = dataclasses.replace(seg, augment=dataclasses.replace(seg.augment, elastic=p))
        estimate = 1.0 / sample_seconds(run_seg, shape)
        places = [("cpu", None)] + ([("cuda", torch.device("cuda"))] if torch.cuda.is_available() else [])
        for where, device in places:
            if device is not None:
                run_seg = dataclasses.replace(run_seg, augment=dataclasses.replace(run_seg.augment, device="cuda"))
            for workers in args.workers:
                seconds = _loader_run(items, run_seg, workers, args.samples, device)
                n = max(1, args.samples // seg.batch_size) * seg.batch_size
                rows.append({
                    "augmentations": name, "augment on": where, "workers": workers, "samples": n,
                    "seconds": round(seconds, 2), "samples/s": round(n / seconds, 2),
                    "samples/s/worker": round(n / seconds / workers, 2),
                    "plan estimate samples/s/worker": round(estimate, 2) if where == "cpu" else "",
                })  # fmt: skip
                print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    Path(args.out + ".csv").write_text(frame.to_csv(index=False))
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (no GPU on this machine: no cuda rows)"
    md = [
        "# Loader throughput at the paper's segmentation patch",
        "",
        f"Command: `.venv/bin/python benchmarks/loader_throughput.py --samples {args.samples} "
        f"--workers {' '.join(map(str, args.workers))}`",
        "",
        f"Machine: `nproc` = {len(os.sched_getaffinity(0))}, CPU `{_cpu_model()}`, GPU: {gpu}; "
        f"torch {torch.__version__}; 1-min load average {load_before:.1f} before, {load[0]:.1f} after.",
        f"Volumes {'x'.join(map(str, shape))} (random), patch {seg.patch}, batch {seg.batch_size}; the paper's "
        "augmentation probabilities from `configs/paper.yaml` with the elastic probability as named. Seconds include "
        "the workers' start-up; each worker runs one torch thread. The plan estimate is `benchmark.profiling.loader`'s "
        "expected seconds per sample (each transform timed once, weighted by its probability).",
        "A load average above `nproc` means other processes held the cores while this ran: a second worker then "
        "finds no free core and adds little; on a dedicated node the total grows with the workers.",
        "",
        *_markdown(frame),
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
