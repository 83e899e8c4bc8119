#!/usr/bin/env python
"""Train one generator for one split and seed, and write its synthetic volumes.

Example: ``python launchers/train_generator.py --generator spade_ldm --split 0 --seed 0 train.engine=deepspeed``
(``key=value`` overrides may come before, between or after the flags).
"""

import argparse
import sys

from benchmark.generators import split_generator_name
from benchmark.run.cli import main_guard
from benchmark.run.single import common_args, run_one


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", required=True, help="a registered generator, optionally @cavity_only")
    common_args(p)
    return p.parse_intermixed_args(argv)


def main(argv):
    args = parse_args(argv)
    split_generator_name(args.generator)  # unknown names (and variants: spade_ldm@cavity_only) list the choices
    return run_one(args, "generator", {"generator": args.generator, "seed": args.seed})


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
