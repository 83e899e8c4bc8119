"""The study's self-contained HTML report, from per-case and image-quality rows.

    python analysis/report.py --rows runs/default/per_case/ --quality runs/default/quality/ \
        --split-sizes runs/default/split_sizes.csv --config runs/default/config.yaml \
        --manifest data/manifest.json --out runs/default/report.html

Tables (CSV, Markdown, LaTeX) and figures (PNG, SVG) go to ``<out stem>_files/`` next to the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchmark
from benchmark.analysis.report import build_report
from benchmark.analysis.tables import read_rows
from benchmark.data.manifest import sha256_file
from benchmark.errors import DataError
from benchmark.run.cli import main_guard


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", help="per-case segmentation CSV file, or a folder of them")
    p.add_argument("--quality", help="image-quality CSV file, or a folder of them")
    p.add_argument("--split-sizes", help="CSV with columns split,n_train,n_test")
    p.add_argument("--config", help="the study's resolved config.yaml")
    p.add_argument("--manifest", help="the data manifest.json (its sha256 goes into the report)")
    p.add_argument("--code-version", default=f"lge-synthbench {benchmark.__version__}")
    p.add_argument("--curves", help="optional CSV run,step,metric,value")
    p.add_argument("--k-scores", help="optional CSV k,silhouette,davies_bouldin")
    p.add_argument("--out", required=True, help="the .html file to write")
    p.add_argument("--baseline", default="real", help="full-data reference arm (an arm <arm>@f<f>: <baseline>@f<f>)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-pairs", type=int, default=5)
    return p.parse_args(argv)


def _optional(path: str | None):
    return read_rows(path) if path else None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    notes = []
    if not args.rows:
        notes.append("No --rows given: the report has no segmentation results.")
    config_text = ""
    if args.config:
        if not Path(args.config).is_file():
            raise DataError(args.config, "config file not found")
        config_text = Path(args.config).read_text()
    digest = None
    if args.manifest:
        if not Path(args.manifest).is_file():
            raise DataError(args.manifest, "manifest file not found")
        digest = sha256_file(args.manifest)
    out = build_report(args.out, seg_rows=_optional(args.rows), quality_rows=_optional(args.quality),
                       split_sizes=_optional(args.split_sizes), config_text=config_text, manifest_digest=digest,
                       code_version=args.code_version, curves=_optional(args.curves),
                       k_scores=_optional(args.k_scores), alpha=args.alpha, baseline=args.baseline,
                       min_pairs=args.min_pairs, notes=notes)  # fmt: skip
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
