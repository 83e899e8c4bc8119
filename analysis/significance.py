"""Significance of every segmentation arm against the baseline, from per-case rows.

    python analysis/significance.py --rows runs/default/per_case/ --split-sizes runs/default/split_sizes.csv \
        --out runs/default/analysis/significance

Writes ``<out>.csv``, ``<out>.md`` and ``<out>.tex`` and prints the pooled rows (one verdict per arm).
"""

from __future__ import annotations

import argparse
import sys

from benchmark.analysis.significance import significance_table
from benchmark.analysis.tables import read_rows, to_markdown, write_table
from benchmark.run.cli import main_guard


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", required=True, help="per-case CSV file, or a folder of them")
    p.add_argument("--split-sizes", help="CSV with columns split,n_train,n_test (needed for the corrected t-test)")
    p.add_argument("--out", required=True, help="output path without suffix")
    p.add_argument("--metric", default="dice", choices=["dice", "hd95", "assd"])
    p.add_argument("--baseline", default="real", help="full-data reference arm (an arm <arm>@f<f>: <baseline>@f<f>)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-pairs", type=int, default=5)
    p.add_argument("--arms", nargs="*", default=None, help="arms expected (listed even without rows)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rows = read_rows(args.rows)
    sizes = read_rows(args.split_sizes) if args.split_sizes else None
    table = significance_table(rows, sizes, alpha=args.alpha, metric=args.metric, baseline=args.baseline,
                               min_pairs=args.min_pairs, arms=args.arms)  # fmt: skip
    paths = write_table(table, args.out, caption=f"{args.metric}: arms against {args.baseline}")
    pooled = table[table["scope"] == "pooled"]
    print(to_markdown(pooled[["arm", "n_splits", "n_pairs", "mean_diff", "ci_low", "ci_high", "t_p", "p_holm",
                              "verdict", "reason"]], digits=4))  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
