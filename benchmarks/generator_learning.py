"""Learning, not just running: a generator's L1 to the real training volumes before and after training.

Builds the default phantom study's data (``configs/default.yaml``: phantom, preprocessing to the study grid,
composite label maps fitted on the training cases), trains the generator on a handful of cases and reports the
mean voxel-wise L1 between the volumes it generates from the training label maps and the real ones, for the
untrained generator (step 0) and after ``--steps`` steps.

    .venv/bin/python benchmarks/generator_learning.py --generator pix2pix3d           # the default config's steps
    .venv/bin/python benchmarks/generator_learning.py --generator pix2pix3d --steps 300
    .venv/bin/python benchmarks/generator_learning.py --generator spade_gan --cases 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.config import load_config
from benchmark.data.composite import composite_maps
from benchmark.data.pipeline import load_arrays, prepare_dataset
from benchmark.generators.train import train_generator


def _mean_l1(model, labels: list[np.ndarray], images: list[np.ndarray], seed: int) -> float:
    errors = []
    for i, (label, image) in enumerate(zip(labels, images, strict=True)):
        lab = torch.from_numpy(label.astype(np.int64))[None, None]
        fake = model.sample(lab, generator=torch.Generator().manual_seed(seed + i))[0, 0].cpu().numpy()
        errors.append(float(np.abs(fake - image).mean()))
    return float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="pix2pix3d")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps of every stage (default: the config's own steps)"
    )
    parser.add_argument("--cases", type=int, default=6, help="training cases (first patients of the phantom)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="use the generator's tiny() widths")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides (e.g. train.batch_size=1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="generator_learning_") as tmp:
        print(json.dumps(run(args, Path(tmp))))


def run(args: argparse.Namespace, work: Path) -> dict:
    """Prepare the data in ``work``, train, and return the figures."""
    overrides = [f"data.cache_dir={work / 'cache'}", f"data.phantom.n_patients={args.cases}", *args.overrides]
    cfg = load_config(args.config, overrides)
    arrays = load_arrays(prepare_dataset(cfg))
    ids = sorted(arrays)[: args.cases]
    images = {c: arrays[c].image for c in ids}
    _, maps = composite_maps(images, {c: arrays[c].label for c in ids}, ids, cfg.composite)
    imgs, labs = [images[c] for c in ids], [maps[c] for c in ids]

    from benchmark.generators import get_generator_spec

    spec = get_generator_spec(args.generator)
    gen_cfg = spec.config_cls.tiny() if args.tiny else cfg.generators[args.generator]
    common = {"num_classes": cfg.composite.num_classes, "train": cfg.train, "seed": args.seed, "device": "cpu"}
    untrained, _ = train_generator(args.generator, gen_cfg, imgs, labs, out_dir=work / "step0", steps=0, **common)
    l1_before = _mean_l1(untrained, labs, imgs, args.seed)
    t0 = time.perf_counter()
    trained, fit = train_generator(
        args.generator, gen_cfg, imgs, labs, out_dir=work / "run", steps=args.steps, **common
    )
    seconds = time.perf_counter() - t0
    l1_after = _mean_l1(trained, labs, imgs, args.seed)
    return {
        "generator": args.generator,
        "shape": list(imgs[0].shape),
        "num_classes": cfg.composite.num_classes,
        "cases": len(ids),
        "steps": fit.steps,
        "batch_size": cfg.train.batch_size,
        "train_seconds": round(seconds, 1),
        "l1_step0": round(l1_before, 4),
        "l1_trained": round(l1_after, 4),
        "ratio": round(l1_after / l1_before, 3),
        "final_losses": {k: round(v, 4) for k, v in fit.final_losses.items()},
    }  # fmt: skip


if __name__ == "__main__":
    main()
