"""Read a study folder into tidy frames, print the sweep's summary table and write its HTML report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark import results
from benchmark.study import Study, code_version


@dataclass
class StudyFrames:
    """Tidy results of a study.

    Args:
        seg: per-case segmentation rows (``benchmark.results.COLUMNS``).
        quality: per-case image-quality rows and set-level rows (``case_id`` empty, with ``ci_low``, ``ci_high``,
            ``n`` and ``note``; ``benchmark.results.SET_COLUMNS``).
        split_sizes: {split, n_train, n_test} (cases), for the corrected resampled t-test.
        arms: arm records (counts of real / synthetic / augmented volumes per arm, from ``arm.json``).
        robust: robustness rows (``benchmark.results.SHIFT_COLUMNS``); empty when the study ran none.
    """

    seg: pd.DataFrame
    quality: pd.DataFrame
    split_sizes: pd.DataFrame
    arms: pd.DataFrame
    robust: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(results.SHIFT_COLUMNS)))


def collect_study(study: Study) -> StudyFrames:
    """Collect every finished job's per-case rows and summaries from the study folder."""
    root = study.root
    seg = results.read_per_case(sorted(root.glob(f"segmentation/split*/seed*/*/{results.ROWS_FILE}")))
    quality = results.concat(
        [
            results.read_per_case(sorted(root.glob(f"quality/split*/*/seed*/{results.ROWS_FILE}"))),
            results.read_summaries(sorted(root.glob(f"quality/split*/*/seed*/{results.SUMMARY_FILE}"))),
        ],
        results.SET_COLUMNS,
    )
    sizes = pd.DataFrame(
        [{"split": s.index, "n_train": len(s.train_cases), "n_test": len(s.test_cases)} for s in study.plan.splits]
    )
    arms = pd.DataFrame([json.loads(p.read_text()) for p in sorted(root.glob("segmentation/split*/seed*/*/arm.json"))])
    robust = results.read_shifted(sorted(root.glob(f"robustness/split*/seed*/*/*/{results.SHIFT_FILE}")))
    return StudyFrames(seg=seg, quality=quality, split_sizes=sizes, arms=arms, robust=robust)


def summary_tables(frames: StudyFrames) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Short tables: Dice/HD95 per arm (mean, sd, cases) and the main image-quality numbers per generator."""
    seg = pd.DataFrame()
    if not frames.seg.empty:
        d = frames.seg[frames.seg.metric.isin(["dice", "hd95"])]
        seg = d.pivot_table(index="arm", columns="metric", values="value", aggfunc=["mean", "std", "count"])
        seg.columns = [f"{m}_{a}" for a, m in seg.columns]
        seg = seg[sorted(seg.columns)]
    qual = pd.DataFrame()
    if not frames.quality.empty:
        dist = frames.quality[frames.quality.case_id.isna()]
        keep = dist[dist.metric.isin(["fid", "kid", "mmd", "ms_ssim", "psnr", "mask_fidelity_cavity"])]
        if not keep.empty:
            qual = keep.pivot_table(index="generator", columns="metric", values="value", aggfunc="mean")
    return seg, qual


def print_summary(frames: StudyFrames) -> None:
    """The table printed at the end of a sweep."""
    seg, qual = summary_tables(frames)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        if not seg.empty:
            print("\nsegmentation (per-case, pooled over splits and seeds):")
            print(seg.to_string())
        if not qual.empty:
            backbones = sorted({str(b) for b in frames.quality.get("backbone", pd.Series()).dropna().unique()})
            print(f"\nimage quality (mean over splits and seeds; features: {', '.join(backbones) or 'n/a'}):")
            print(qual.to_string())


def write_study_report(study: Study, frames: StudyFrames, outcomes: dict | None = None) -> Path:
    """The self-contained HTML report in ``<study>/report.html``."""
    from benchmark.analysis.budget import budget_section
    from benchmark.analysis.fractions import fraction_note, fraction_section
    from benchmark.analysis.report import build_report

    notes = [
        f"generator protocol: {study.plan.protocol}"
        + (" (LEAKY: generators saw segmentation test patients)" if study.plan.leaky else "")
    ]
    failed = [k for k, o in (outcomes or {}).items() if o.status != "done"]
    if failed:
        notes.append(f"{len(failed)} job(s) did not finish: {', '.join(failed[:10])}")
    if not frames.arms.empty:
        counts = frames.arms.groupby("arm")[["n_real", "n_synthetic", "n_augmented"]].first()
        notes.append(
            "training volumes per arm (real / synthetic / augmented): "
            + "; ".join(f"{a}: {int(r.n_real)}/{int(r.n_synthetic)}/{int(r.n_augmented)}" for a, r in counts.iterrows())
        )
    seg = frames.seg if not frames.seg.empty else None
    sections = [("Training budget per arm", budget_section(frames.arms))]
    html, _ = fraction_section(seg, study.root / "report_files")  # only with more than one fraction
    if html:
        sections.append(("Training-data fraction", html))
        notes.append(fraction_note(seg))
    figures = {}
    montages = [p for p in sorted(study.root.glob("samples/split0/*/seed*/montage.png")) if "@" not in p.parts[-2]]
    for png in montages[:3]:  # not a training-data fraction's generator (seed<s>@f<f>)
        figures[f"real vs synthetic ({png.parts[-3]}, {png.parts[-2]})"] = png
    return build_report(
        study.root / "report.html",
        seg_rows=seg,
        quality_rows=frames.quality if not frames.quality.empty else None,
        split_sizes=frames.split_sizes,
        config_text=(study.root / "config.yaml").read_text(),
        manifest_digest=study.manifest.digest(),
        code_version=code_version(),
        notes=notes,
        figures=figures,
        robust_rows=frames.robust if study.cfg.robustness.enabled or not frames.robust.empty else None,
        sections=sections,
    )


def summarise_study(study: Study, outcomes: dict) -> Path | None:
    """Collect per-case rows and summaries from the study folder, print a short table, write the report."""
    frames = collect_study(study)
    print_summary(frames)
    return write_study_report(study, frames, outcomes)
