#!/usr/bin/env python
"""Train and evaluate one segmentation arm of one split, or the real-only segmenter of a generator scope.

Examples: ``python launchers/train_segmenter.py --split 0 --arm real+spade_ldm --seed 0``;
``python launchers/train_segmenter.py --generator-scope --split 0 --seed 0`` (the frozen segmenter behind the
consistency loss of the generators serving split 0). ``key=value`` overrides may come before, between or after the
flags.
"""

import argparse
import sys

from benchmark.run.cli import main_guard
from benchmark.run.single import common_args, run_one


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--generator-scope",
        action="store_true",
        help="the real-only segmenter of the generator scope serving --split (generators with a consistency loss)",
    )
    what.add_argument(
        "--arm",
        help="real | real@matched | real+<generator> | synthetic_only:<generator> | real+augmented | real+real_extra "
        "| real+mismatched:<generator>",
    )
    p.add_argument("--ratio", type=float, default=1.0, help="synthetic:real volumes for generator arms")
    common_args(p)
    return p.parse_intermixed_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.generator_scope:
        return run_one(args, "scope_segmenter", {"seed": args.seed})
    params = {"split": args.split, "seed": args.seed, "arm": args.arm, "ratio": args.ratio}
    return run_one(args, "segmentation", params)


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
