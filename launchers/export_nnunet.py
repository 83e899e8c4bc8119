#!/usr/bin/env python
"""Export one arm of a study as an nnU-Net v2 raw dataset (see ``benchmark/run/nnunet_export.py``).

Example: ``python launchers/export_nnunet.py --study runs/default --split 0 --arm real+spade_ldm --dataset-id 501``
"""

import argparse
import sys

from benchmark.run.cli import main_guard
from benchmark.run.nnunet_export import export_arm


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="the study folder, e.g. runs/default")
    p.add_argument("--split", type=int, required=True, help="split index")
    p.add_argument("--arm", required=True, help="an arm the study ran, e.g. real or real+spade_ldm")
    p.add_argument("--seed", type=int, default=0, help="the arm's training seed (default 0)")
    p.add_argument("--ratio", type=float, default=1.0, help="the arm's synthetic:real ratio (default 1)")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1..999 (default 501)")
    p.add_argument("--name", default=None, help="dataset name (default <study>_split<S>_seed<seed>_<arm>)")
    p.add_argument("--out", default=None, help="holds nnUNet_raw/ and nnUNet_preprocessed/ (default <study>/nnunet)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    dataset = export_arm(
        a.study, a.split, a.arm, seed=a.seed, ratio=a.ratio, dataset_id=a.dataset_id, name=a.name, out=a.out
    )
    print(dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
