#!/usr/bin/env python
"""Choose k for the composite maps: Silhouette and Davies-Bouldin over k=2..10 (the paper's Fig. 2).

Example: ``python analysis/cluster_selection.py --config configs/default.yaml --split 0 --out runs/k_selection``
Scores are computed on the context voxels of the split's training images (the voxels Algorithm 1 clusters).
"""

import argparse
import sys
from pathlib import Path

from benchmark.run.cli import main_guard


def main(argv):
    from benchmark.analysis.plots import plot_k_selection
    from benchmark.analysis.tables import write_table
    from benchmark.config import load_config
    from benchmark.data.composite import k_selection
    from benchmark.study import prepare_study

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--kmin", type=int, default=2)
    p.add_argument("--kmax", type=int, default=10)
    p.add_argument("--sample", type=int, default=4000, help="voxels sampled for the scores")
    p.add_argument("--out", default=None, help="output folder (default: <study>/k_selection)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, before or after the flags")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides + ["tracking.enabled=false"])
    study = prepare_study(cfg)
    ids = study.plan.splits[args.split].train_cases
    arrays = study.arrays
    scores = k_selection(
        {c: arrays[c].image for c in ids},
        {c: arrays[c].label for c in ids},
        range(args.kmin, args.kmax + 1),
        cfg.composite,
        sample=args.sample,
    )
    out = Path(args.out) if args.out else study.root / "k_selection"
    out.mkdir(parents=True, exist_ok=True)
    write_table(scores, out / "k_selection")
    plot_k_selection(scores, out / "k_selection", chosen_k=cfg.composite.k)
    print(scores.to_string(index=False))
    best = int(scores.loc[scores.silhouette.idxmax(), "k"])
    print(f"best k by silhouette: {best}; configured composite.k: {cfg.composite.k}; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
