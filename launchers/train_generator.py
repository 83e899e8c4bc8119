#!/usr/bin/env python
"""Train one generator for one split and seed, and write its synthetic volumes.

Example: ``python launchers/train_generator.py --generator spade_ldm --split 0 --seed 0 train.engine=deepspeed``
"""

import argparse
import sys
from pathlib import Path

# the repo root replaces this folder on the path: launchers/profile.py must not shadow the profile module
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmark.generators import get_generator_spec  # noqa: E402
from benchmark.run.cli import main_guard  # noqa: E402
from benchmark.run.single import common_args, run_one  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", required=True)
    common_args(p)
    args = p.parse_args(argv)
    get_generator_spec(args.generator)  # unknown names list the choices
    return run_one(args, "generator", {"generator": args.generator, "seed": args.seed})


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
