"""The data path's side of the cost plan: samples per second one loader worker builds for a job.

One loader worker runs the job's batch function on one torch thread (``benchmark.engine.batches``). For a
segmentation job with ``augment.device: cpu`` that is the MONAI pipeline at the job's volume shape and patch, whose
transforms each fire with their own probability; a handful of samples would hit or miss the slow elastic
deformation by chance, so ``sample_seconds`` times each transform once, forced on, on a random volume and
adds them up weighted by their probabilities (the expected seconds per sample). With ``augment.device: cuda``, and
for generator jobs, the worker only draws and stacks volumes: that is timed directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from benchmark.config import SegmentationConfig
from benchmark.engine.batches import one_torch_thread

# the probability fields of AugmentConfig, each switching one transform (flip: one per axis, each with this prob)
PROBABILITIES = ("flip", "affine", "elastic", "noise", "blur", "gamma", "bias_field")


def _volume(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random image and a two-class label map on ``shape`` (the timing does not depend on their content)."""
    rng = np.random.default_rng(seed)
    label = (rng.random(shape) > 0.8).astype(np.int64)
    return (label * 0.5 + rng.normal(0.0, 0.1, shape)).astype(np.float32), label


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: MONAI builds its grids and kernels on the first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def transform_seconds(seg: SegmentationConfig, shape: tuple[int, ...], repeats: int = 1) -> dict[str, float]:
    """Seconds one worker spends per sample on the crop alone (``"crop"``) and on each transform forced on.

    Args:
        seg: the job's ``segmentation`` section (its augmentations and patch).
        shape: the job's volume shape (``preprocess.shape``).
        repeats: timed calls per transform after one warm-up (the fastest counts).

    Returns:
        ``{"crop": s, "<probability field>": extra s when that transform always fires}`` for the transforms the
        job uses (probability > 0).
    """
    from benchmark.segmentation.augment import augment_pair, build_augment, patch_for

    image, label = _volume(tuple(shape))
    patch, off = patch_for(seg, tuple(shape)), {f: 0.0 for f in PROBABILITIES}

    def seconds(**on: float) -> float:
        transform = build_augment(dataclasses.replace(seg.augment, **(off | on)), patch)
        rng = np.random.default_rng(0)
        return _best_of(lambda: augment_pair(transform, image, label, rng), repeats)

    with one_torch_thread():
        out = {"crop": seconds()}
        for field in PROBABILITIES:
            if getattr(seg.augment, field) > 0:
                out[field] = max(0.0, seconds(**{field: 1.0}) - out["crop"])
    return out


def sample_seconds(seg: SegmentationConfig, shape: tuple[int, ...], repeats: int = 1) -> float:
    """Expected seconds per training sample in one loader worker of a segmentation job.

    Args:
        seg: the job's ``segmentation`` section.
        shape: the job's volume shape.
        repeats: as in ``transform_seconds``.
    """
    if seg.augment.device == "cuda":  # the worker draws and stacks volumes; the GPU augments them
        from benchmark.segmentation.arms import ArmItem
        from benchmark.segmentation.train import make_batch_fn

        image, label = _volume(tuple(shape))
        fn = make_batch_fn([ArmItem(image, label, "real", "c0")], dataclasses.replace(seg, batch_size=1))
        with one_torch_thread():
            return _best_of(lambda: fn(0, np.random.default_rng(0)), max(repeats, 3))
    parts = transform_seconds(seg, shape, repeats)
    return parts["crop"] + sum(getattr(seg.augment, f) * s for f, s in parts.items() if f != "crop")


def stack_seconds(shape: tuple[int, ...], batch: int, repeats: int = 3) -> float:
    """Seconds per sample of a generator job's loader (``benchmark.generators.train.make_batch_fn``: draw, stack).

    Args:
        shape: the job's volume shape.
        batch: pairs per batch.
        repeats: timed batches after one warm-up.
    """
    from benchmark.generators.train import make_batch_fn

    image, label = _volume(tuple(shape))
    fn = make_batch_fn([image, image], [label, label], batch)
    with one_torch_thread():
        return _best_of(lambda: fn(0, np.random.default_rng(0)), repeats) / batch
