"""The generator job body: train one registered generator on a split's training pairs, then write samples.

``train_generator`` builds the generator from the registry and hands it to ``benchmark.engine.fit`` with a
batch function that draws random training pairs from the engine's per-step RNG. ``sample_to_disk`` writes one
synthetic NIfTI per label map (with that label map's affine), ``samples.json`` and a real-vs-synthetic
montage. Launchers and sweeps call these; neither knows which generator it is running.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import write_text_atomic
from benchmark.config import TrainConfig
from benchmark.data.io import save_nifti
from benchmark.engine.loop import BatchFn, FitResult, fit
from benchmark.errors import ConfigError, DataError
from benchmark.generators import check_copies, get_generator_spec
from benchmark.generators.base import Generator, GeneratorConfig
from benchmark.tracking.tracker import Tracker


def check_label_values(label: np.ndarray, num_classes: int, name: str) -> None:
    """Raise ``DataError`` naming ``name`` and the value if ``label`` holds a value outside ``0..num_classes-1``."""
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(name, f"label value {bad} is outside 0..{num_classes - 1} (num_classes={num_classes})")


def _check_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int) -> tuple[int, ...]:
    if len(images) != len(labels) or not images:
        raise DataError(
            "training set", f"needs matching, non-empty images and labels (got {len(images)} / {len(labels)})"
        )
    shape = tuple(images[0].shape)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        if img.ndim != 3 or tuple(img.shape) != shape or tuple(lab.shape) != shape:
            raise DataError(f"training pair {i}", f"image {img.shape} / label {lab.shape}, expected both {shape}")
        check_label_values(lab, num_classes, f"training label map {i}")
    return shape


def make_batch_fn(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], batch_size: int) -> BatchFn:
    """A ``batch_fn`` drawing ``batch_size`` random training pairs (with replacement) from the engine's RNG.

    Args:
        images: (X, Y, Z) float volumes.
        labels: (X, Y, Z) integer label maps, same order.
        batch_size: pairs per batch (per rank).

    Returns:
        ``batch_fn(step, rng) -> {"image": (B,1,X,Y,Z) float32, "label": (B,1,X,Y,Z) int64}``.
    """
    img = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in images])[:, None])
    lab = torch.from_numpy(np.stack([np.asarray(a, dtype=np.int64) for a in labels])[:, None])

    def batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, len(img), size=batch_size))
        return {"image": img[idx], "label": lab[idx]}

    return batch_fn


def _stage_steps(model: Generator, gen_cfg: GeneratorConfig, n_cases: int, train: TrainConfig, steps: int | None):
    if steps is not None:
        return {s.name: steps for s in model.stages()}
    epochs = gen_cfg.epochs
    if epochs is None:
        return None
    # the steps of a one-rank job: the engine divides them over the ranks once the process group exists
    per_epoch = math.ceil(n_cases / train.batch_size)
    return {s.name: epochs * per_epoch for s in model.stages()}


def train_generator(
    name: str,
    gen_cfg: GeneratorConfig | None,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_classes: int,
    train: TrainConfig,
    out_dir: str | Path,
    seed: int,
    tracker: Tracker | None = None,
    steps: int | None = None,
    device: torch.device | str | None = None,
    segmenter: torch.nn.Module | None = None,
) -> tuple[Generator, FitResult]:
    """Build generator ``name`` and train it on (image, label map) pairs; resumes from ``out_dir`` checkpoints.

    Args:
        name: a key of ``GENERATORS``.
        gen_cfg: its config dataclass (None = the defaults).
        images: training volumes (X, Y, Z), float.
        labels: their label maps with values ``0..num_classes-1``.
        num_classes: number of label values.
        train: engine settings.
        out_dir: the job folder (checkpoints in ``out_dir/checkpoints``).
        seed: seeds the initial weights and the engine.
        tracker: receives the losses (rank 0).
        steps: optimizer steps of every stage of a one-rank job, replacing the config's steps/epochs (tests, quick
            runs); the engine divides them over the ranks.
        device: None picks CUDA when available.
        segmenter: the frozen real-only segmenter a config with ``needs_segmenter()`` trains against (a
            consistency loss); required then, refused otherwise.

    Returns:
        The trained generator and the engine's ``FitResult``.
    """
    spec = get_generator_spec(name)
    gen_cfg = spec.config_cls() if gen_cfg is None else gen_cfg
    if not isinstance(gen_cfg, spec.config_cls):
        raise ConfigError(f"generators.{name}: expected a {spec.config_cls.__name__}, got {type(gen_cfg).__name__}")
    shape = _check_pairs(images, labels, num_classes)
    torch.manual_seed(seed)  # initial weights depend on the seed only, identical on every rank
    model = spec.build(gen_cfg, num_classes, shape)
    if gen_cfg.needs_segmenter() != (segmenter is not None):
        raise ConfigError(
            f"generators.{name}: its settings " + ("ask for a segmenter and none was given" if segmenter is None
                                                   else "ask for no segmenter, but one was given")
        )  # fmt: skip
    if segmenter is not None:
        model.set_segmenter(segmenter)
    batch_fn = make_batch_fn(images, labels, train.batch_size)
    stage_steps = _stage_steps(model, gen_cfg, len(images), train, steps)
    if gen_cfg.precision is not None:  # this generator's own precision (the paper's mixed-precision autoencoder)
        train = dataclasses.replace(train, precision=gen_cfg.precision)
    result = fit(
        model, batch_fn, train=train, out_dir=Path(out_dir), seed=seed, tracker=tracker, device=device,
        stage_steps=stage_steps,
    )  # fmt: skip
    return model, result


def _montage(rows: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]], path: Path) -> Path:
    """One column per case: its real volume (when given), the synthetic one, and the synthetic one with the
    label map's contours, all through the label's centroid (``benchmark.viz``, the one montage renderer)."""
    from benchmark.viz import save_montage

    reals = [real for _, _, real, _ in rows]
    synths = [synth for *_, synth in rows]
    grid = [("real", reals)] if any(r is not None for r in reals) else []
    grid += [("synthetic", synths), ("synthetic + label", synths)]
    labels = [[None] * len(rows)] * (len(grid) - 1) + [[label for _, label, _, _ in rows]]
    return save_montage(path, grid, labels=labels, titles=[case_id for case_id, *_ in rows])


def _sample_one(generator: Generator, label: torch.Tensor, entropy: list[int], device: torch.device) -> np.ndarray:
    gen = torch.Generator(device=device).manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    return generator.sample(label, generator=gen)[0, 0].detach().float().cpu().numpy()


def sample_to_disk(
    generator: Generator,
    labels: dict[str, np.ndarray],
    affines: dict[str, np.ndarray],
    out_dir: str | Path,
    seed: int,
    reals: dict[str, np.ndarray] | None = None,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    montage_cases: int = 4,
    copies: int = 1,
) -> Path:
    """Generate ``copies`` volumes per label map: ``samples/<case_id>.nii.gz`` (the first) and
    ``samples/copy<k>/<case_id>.nii.gz`` (the others), then ``samples.json`` and ``montage.png``.

    Args:
        generator: a trained generator.
        labels: case id -> (X, Y, Z) label map.
        affines: case id -> 4x4 affine of that label map (copied to the synthetic volume).
        out_dir: the job folder.
        seed: seeds each case's sampling noise (together with the case id and, after the first, the copy).
        reals: case id -> real image, shown next to the synthetic one in the montage.
        name: generator name recorded in ``samples.json`` (default: the class name).
        num_classes: if given, label maps with other values raise ``DataError``.
        montage_cases: cases shown in the montage (their first volumes).
        copies: volumes per label map, each from its own noise (``check_copies`` refuses more than one from a
            deterministic generator).

    Returns:
        The path of ``samples.json`` (written last: its presence marks a complete set).
    """
    out_dir = Path(out_dir)
    check_copies(name or type(generator).__name__, generator.cfg, copies)
    missing = sorted(set(labels) - set(affines))
    if missing:
        raise DataError(missing[0], "label map has no affine")
    device = next(next(iter(generator.networks.values())).parameters()).device
    records, rows = [], []
    for case_id, label in labels.items():
        if num_classes is not None:
            check_label_values(label, num_classes, f"label map {case_id}")
        lab = torch.from_numpy(np.asarray(label, dtype=np.int64))[None, None]
        volumes = []
        for copy in range(copies):
            # noise seeded by (seed, case id[, copy]): a case gets the same volumes whichever subset is sampled
            entropy = [seed, zlib.crc32(case_id.encode())] + ([copy] if copy else [])
            volumes.append(_sample_one(generator, lab, entropy, device))
            rel = Path("samples", f"copy{copy}" if copy else "", f"{case_id}.nii.gz")
            save_nifti(out_dir / rel, volumes[-1].astype(np.float32), affines[case_id])
            records.append({"case_id": case_id, "path": str(rel)} | ({"copy": copy} if copy else {}))
        if len(rows) < montage_cases:
            rows.append((case_id, np.asarray(label), None if reals is None else reals.get(case_id), volumes[0]))
    if rows:
        _montage(rows, out_dir / "montage.png")
    manifest = {"generator": name or type(generator).__name__, "seed": seed, "samples": records}
    final = out_dir / "samples.json"
    write_text_atomic(final, json.dumps(manifest, indent=2))
    return final
