#!/usr/bin/env python
"""Segmentation arms on one split of a study: mean Dice / HD95 / ASSD on the held-out cases and time per arm.

Default: the embedded phantom study (``benchmark.config`` defaults), split 0 of its ``splits`` section, arms
``real`` and ``real+augmented``, one torch thread. Generator arms (``real+<gen>``, ``synthetic_only:<gen>``) read
``<study>/samples/split<k>/<gen>/seed<s>/samples.json`` and fail with the command that makes them if absent.

    .venv/bin/python benchmarks/segmentation_arms.py [--config configs/x.yaml] [--arms real real+augmented]
        [--split 0] [--seed 0] [--threads 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmark.config import load_config, to_dict  # noqa: E402
from benchmark.data.pipeline import load_arrays, prepare_dataset  # noqa: E402
from benchmark.data.splits import make_splits  # noqa: E402
from benchmark.segmentation.arms import audit_arm, build_arm, load_synth_index, parse_arm  # noqa: E402
from benchmark.segmentation.evaluate import summarize  # noqa: E402
from benchmark.segmentation.train import train_arm  # noqa: E402
from benchmark.study import Study  # noqa: E402


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None)
    p.add_argument("--arms", nargs="+", default=["real", "real+augmented"])
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/benchmarks/segmentation_arms")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, f"train.threads={args.threads}", "train.checkpoint_every=0"])
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    manifest = prepare_dataset(cfg)
    arrays = load_arrays(manifest)
    split = make_splits(manifest.patients(), cfg.splits, manifest.digest()).splits[args.split]
    by_id = manifest.by_id()
    real = {c: (a.image, a.label) for c, a in arrays.items()}
    test = {c: (arrays[c].image, arrays[c].label, by_id[c].spacing) for c in split.test_cases}
    print(
        f"data: {len(arrays)} cases, grid {cfg.preprocess.shape}, split {args.split} ({cfg.splits.protocol}): "
        f"{len(split.train_cases)} train / {len(split.test_cases)} test cases, "
        f"{time.perf_counter() - start:.1f} s"
    )
    seg = cfg.segmentation
    print(
        f"segmentation: channels {seg.channels}, res units {seg.num_res_units}, steps {seg.steps}, "
        f"batch {seg.batch_size}, lr {seg.lr} ({seg.schedule}), dropout {seg.dropout}, threads {args.threads}"
    )

    results = []
    for arm in args.arms:
        _, gen = parse_arm(arm)
        synth = {}
        if gen:
            folder = Study(cfg).samples_dir(gen, args.split, args.seed)
            synth[gen] = load_synth_index(folder, generator=gen, split=args.split, seed=args.seed)
        data = build_arm(
            arm,
            split.train_cases,
            split.test_cases,
            real,
            synth,
            seg.ratios[0],
            args.seed,
            target=seg.target,
            augment=seg.augment,
        )
        audit = audit_arm(data, split)
        out = Path(args.out) / f"split{args.split}" / f"seed{args.seed}" / arm.replace(":", "_")
        t0 = time.perf_counter()
        rows = train_arm(
            data,
            test,
            seg,
            cfg.train,
            out_dir=out,
            seed=args.seed,
            split=args.split,
            audit=audit,
            expected_spacing=cfg.data.expected_spacing,
            resume=False,
        )
        record = json.loads((out / "arm.json").read_text())
        means = summarize(rows)
        results.append(
            {
                "arm": arm,
                "n_real": data.n_real,
                "n_synthetic": data.n_synthetic,
                "n_augmented": data.n_augmented,
                "dice": means["mean_dice"],
                "dice_min": float(rows[rows.metric == "dice"].value.min()),
                "hd95_mm": means["mean_hd95"],
                "assd_mm": means["mean_assd"],
                "train_s": record["train_seconds"],
                "eval_s": record["eval_seconds"],
                "total_s": time.perf_counter() - t0,
                "leaky": audit.leaky,
            }
        )
        r = results[-1]
        print(
            f"{arm:28s} real {r['n_real']:3d} synth {r['n_synthetic']:3d} aug {r['n_augmented']:3d} | "
            f"Dice {r['dice']:.3f} (min {r['dice_min']:.3f}) HD95 {r['hd95_mm']:.2f} mm ASSD {r['assd_mm']:.2f} mm | "
            f"train {r['train_s']:.1f} s, eval {r['eval_s']:.1f} s",
            flush=True,
        )
    summary = {"config": to_dict(cfg.segmentation), "threads": args.threads, "split": args.split, "arms": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
