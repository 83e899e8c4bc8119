#!/usr/bin/env python
"""Image-quality metrics of synthetic volumes against real ones (NIfTI folders paired by file name).

Example: ``python launchers/evaluate_generator.py --real data/real --synthetic runs/x/synthetic
--config configs/default.yaml metrics.backbone=resnet10 metrics.bootstrap=100`` (``key=value`` overrides may
come before, between or after the flags).
"""

import argparse
import dataclasses
import json
import sys

import numpy as np

from benchmark.config import load_config
from benchmark.metrics.evaluate import evaluate_generator, load_nifti_dir
from benchmark.run.cli import main_guard
from benchmark.study import writable_folder


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", required=True, help="folder of real NIfTI volumes (the paired references)")
    p.add_argument("--synthetic", required=True, help="folder of synthetic NIfTI volumes, same file names")
    p.add_argument("--labels", help="folder of conditioning label maps (mask fidelity)")
    p.add_argument("--train-real", help="folder of the generator's real training volumes (default: --real)")
    p.add_argument("--config", help="study config YAML (its metrics section is used)")
    p.add_argument("--out", help="where per_case.csv and summary.json go (default: the --synthetic folder)")
    p.add_argument("--cache-dir", help="feature cache (default: <data.cache_dir>/features)")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. metrics.bootstrap=50")
    return p.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    study = load_config(args.config, args.overrides)
    cfg = study.metrics
    if "mask_fidelity" in cfg.metrics:
        # the frozen real-only segmenter is not wired into this launcher yet
        print("note: mask_fidelity skipped (no segmenter is available to this launcher)", file=sys.stderr)
        cfg = dataclasses.replace(cfg, metrics=tuple(m for m in cfg.metrics if m != "mask_fidelity"))
    real, synthetic = load_nifti_dir(args.real), load_nifti_dir(args.synthetic)
    # both folders are checked before the metrics run, not when their results are written
    out = writable_folder(args.out or args.synthetic, "output folder (--out)")
    cache = writable_folder(args.cache_dir or f"{study.data.cache_dir}/features", "feature cache (--cache-dir)")
    _, summary = evaluate_generator(
        real,
        synthetic,
        load_nifti_dir(args.labels, dtype=np.int64) if args.labels else {},
        load_nifti_dir(args.train_real) if args.train_real else real,
        cfg,
        cache_dir=cache,
        out_dir=out,
        device=args.device,
    )
    short = {k: {f: v.get(f) for f in ("value", "ci_low", "ci_high", "n", "backbone")} for k, v in summary.items()}
    print(json.dumps(short, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
