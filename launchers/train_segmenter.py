#!/usr/bin/env python
"""Train and evaluate one segmentation arm of one split.

Example: ``python launchers/train_segmenter.py --split 0 --arm real+spade_ldm --seed 0``
"""

import argparse
import sys
from pathlib import Path

# the repo root replaces this folder on the path: launchers/profile.py must not shadow the profile module
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmark.run.cli import main_guard  # noqa: E402
from benchmark.run.single import common_args, run_one  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", required=True, help="real | real+<generator> | synthetic_only:<generator> | real+augmented")
    p.add_argument("--ratio", type=float, default=1.0, help="synthetic:real volumes for generator arms")
    common_args(p)
    args = p.parse_args(argv)
    params = {"split": args.split, "seed": args.seed, "arm": args.arm, "ratio": args.ratio}
    return run_one(args, "segmentation", params)


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
