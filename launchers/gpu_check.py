#!/usr/bin/env python
"""Check a node before a study's first GPU-hour: torch build vs GPU, NCCL all-reduce, one training burst per network.

Examples:
    python launchers/gpu_check.py --config configs/paper.yaml
    python launchers/gpu_check.py --config configs/default.yaml --generators pix2pix3d --out runs/gpu_check

Prints a table and writes <out>/gpu_check.csv. Without a GPU it says so and reports CPU numbers. key=value pairs
before, between or after the flags override the study config (e.g. train.precision=fp16). Exit code 1 when a
check failed (a network out of memory included), 2 on a configuration error (a torch build without kernels for
the GPU names the wheels to install).
"""

import argparse
import sys

from benchmark.config import load_config
from benchmark.profiling.gpu_check import format_table, run_gpu_check
from benchmark.run.cli import main_guard


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/default.yaml", help="study config (shape, precision, networks)")
    p.add_argument("--generators", help="comma-separated generators to step (default: the study's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per training stage (>= 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", default="runs/gpu_check", help="output folder (gpu_check.csv)")
    p.add_argument("overrides", nargs="*", help="study config key=value overrides, before or after the flags")
    return p.parse_intermixed_args(argv)


def main(argv):
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()] if args.generators else None
    rows, csv = run_gpu_check(cfg, args.out, generators=generators, steps=args.steps, device=args.device)
    print(format_table(rows))
    print(f"wrote {csv}")
    return 1 if any(r["status"] in ("failed", "out of memory") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
