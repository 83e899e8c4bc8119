"""Tables of a study read from MLflow: segmentation per arm, image quality per generator, significance.

    python analysis/aggregate.py --experiment default
    python analysis/aggregate.py --experiment default --tracking-uri http://127.0.0.1:5000 --out runs/default/analysis

Writes into ``--out`` (default ``runs/<experiment>/analysis``): ``segmentation``, ``quality`` and
``significance`` as ``.csv``, ``.md`` and ``.tex``, and the tidy frames ``seg_rows.csv``, ``quality_rows.csv``,
``split_sizes.csv`` and ``arms.csv`` (inputs of ``analysis/significance.py`` and ``analysis/report.py``).
Without ``--tracking-uri`` the store is ``$MLFLOW_TRACKING_URI`` or the sweep's default, the sqlite file
``runs/<experiment>/mlflow.db``. An experiment without runs, or with finished runs that lack their per-case
artifacts, stops with a message naming them (exit code 2); ``--allow-missing`` tabulates the rest instead.
Only the runs of the study's own config are read: their config hashes come from the study folder's job records
(``--study``, default ``runs/<experiment>`` when it holds them), so another variant or user logging to the same
experiment never enters the tables; ``--study none`` reads every run (the newest finished one per job).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark.analysis.mlflow_source import kind_of, read_study, study_config_hashes
from benchmark.analysis.significance import significance_table
from benchmark.analysis.tables import quality_table, segmentation_table, to_markdown, write_table
from benchmark.run.cli import main_guard
from benchmark.tracking.runs import compare_url
from benchmark.tracking.tracker import default_uri


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment (the study name by default)")
    p.add_argument("--tracking-uri", help="e.g. http://127.0.0.1:5000 or sqlite:///runs/default/mlflow.db")
    p.add_argument("--out", help="output folder (default: runs/<experiment>/analysis)")
    p.add_argument("--baseline", default="real", help="full-data reference arm (an arm <arm>@f<f>: <baseline>@f<f>)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-pairs", type=int, default=5)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument(
        "--study",
        help="study folder whose config's runs are read (default: runs/<experiment> if it "
        "has state/jobs.json; 'none': every run)",
    )
    p.add_argument("--allow-missing", action="store_true", help="tabulate runs that have per-case artifacts")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(Path("runs") / args.experiment)
    out = Path(args.out or Path("runs") / args.experiment / "analysis")
    folder = Path(args.study or Path("runs") / args.experiment)
    own = args.study != "none" and (args.study is not None or (folder / "state" / "jobs.json").is_file())
    hashes = study_config_hashes(folder) if own else None
    study = read_study(uri, args.experiment, allow_missing=args.allow_missing, config_hashes=hashes)
    print(f"runs of the config of study folder {folder}" if own else "runs of every config (no study folder)")
    f = study.frames
    seg = segmentation_table(f.seg)
    qual = quality_table(f.quality, n_boot=args.n_boot)
    sig = significance_table(f.seg if not f.seg.empty else None, f.split_sizes, alpha=args.alpha,
                             baseline=args.baseline, min_pairs=args.min_pairs, n_boot=args.n_boot,
                             arms=study.expected_arms)  # fmt: skip
    written = [
        *write_table(seg, out / "segmentation", caption="Segmentation per arm, per split and pooled").values(),
        *write_table(qual, out / "quality", caption="Image quality per generator (mean over runs, 95% CI)").values(),
        *write_table(sig, out / "significance", caption=f"Arms against {args.baseline} (Dice)").values(),
    ]
    for name, frame in {"seg_rows": f.seg, "quality_rows": f.quality, "split_sizes": f.split_sizes,
                        "arms": f.arms}.items():  # fmt: skip
        written.extend(write_table(frame, out / name, formats=("csv",)).values())
    _print_summary(study, seg, qual, sig)
    print(f"wrote {len(written)} files to {out}")
    return 0


def _print_summary(study, seg, qual, sig) -> None:
    kinds = {}
    for run in study.runs.values():
        kind = kind_of(run)
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"experiment {study.experiment} ({study.uri}): "
          + ", ".join(f"{n} {s} run(s)" for s, n in sorted(kinds.items())))  # fmt: skip
    for note in study.notes:
        print(f"note: {note}", file=sys.stderr)
    pooled = seg[seg["split"] == "all"]
    if not pooled.empty:
        print("\nsegmentation (pooled over splits and seeds):")
        print(to_markdown(pooled[["arm", "metric", "mean", "sd", "sd_splits", "n"]]), end="")
    if not qual.empty:
        print("\nimage quality per generator:")
        print(to_markdown(qual[["generator", "metric", "mean", "ci_low", "ci_high", "n_runs"]]), end="")
    verdicts = sig[sig["scope"] == "pooled"]
    if not verdicts.empty:
        print("\nagainst the baseline (Holm-corrected, corrected resampled t-test):")
        print(to_markdown(verdicts[["arm", "n_splits", "mean_diff", "p_holm", "verdict", "reason"]]), end="")
    seg_ids = [r.run_id for r in study.runs.values() if kind_of(r) == "segmentation"]
    url = compare_url(study.uri, study.experiment_id, seg_ids)
    if url:
        print(f"\ncompare the segmentation runs in the MLflow UI: {url}")


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
