"""A single self-contained HTML report of a study: provenance, tables, figures and every gap in the data.

Images are embedded as base64 data URIs and the styling is inline CSS, so the file can be mailed, archived or
logged as one artifact and still opens offline. Missing inputs never stop the report: each becomes a visible
message saying what is missing and what that usually means.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark.analysis import plots
from benchmark.analysis.headline import first_screen
from benchmark.analysis.html_parts import CSS, esc, img, msg, num, table_html
from benchmark.analysis.robustness import robustness_section
from benchmark.analysis.significance import main_baseline, significance_table
from benchmark.analysis.tables import quality_notes, quality_table, segmentation_table, write_table
from benchmark.atomic import write_text_atomic
from benchmark.errors import DataError
from benchmark.segmentation.fractions import split_suffix

__all__ = ["LEAKY_PROTOCOLS", "build_report", "config_digest", "write_report"]

# Same set as benchmark.data.splits.LEAKY_PROTOCOLS; kept here so the report renders without the data stack.
LEAKY_PROTOCOLS = ("shared",)

_SIG_COLUMNS = [
    "arm", "metric", "verdict", "mean_diff", "t_ci_low", "t_ci_high", "mde", "mde_alpha", "lucky_splits", "n_splits",
    "p_holm", "t_p", "t_stat", "df", "test_train_ratio", "n_pairs", "ci_low", "ci_high", "effect_dz",
    "rank_biserial", "reason",
]  # fmt: skip
_SPLIT_COLUMNS = [
    "arm", "metric", "split", "n_pairs", "mean_diff", "wilcoxon_stat", "wilcoxon_p", "wilcoxon_p_holm",
    "wilcoxon_method", "reason",
]  # fmt: skip


def config_digest(config_text: str) -> str:
    """sha256 (first 16 hex digits) of the exact config text the numbers were produced with.

    Args:
        config_text: the resolved config as written next to the study (YAML).

    Returns:
        16 lowercase hex digits.
    """
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


def _protocol(config_text: str, protocol: str | None) -> tuple[str, bool]:
    if protocol is None:
        try:
            cfg = yaml.safe_load(config_text) if config_text else None
        except yaml.YAMLError:
            cfg = None
        splits = cfg.get("splits") if isinstance(cfg, dict) else None
        protocol = splits.get("protocol") if isinstance(splits, dict) else None
    if protocol is None:
        return "not stated in the config", False
    return str(protocol), str(protocol) in LEAKY_PROTOCOLS


def _distinct(frames: Sequence[pd.DataFrame | None], column: str) -> list[str]:
    values: set[str] = set()
    for f in frames:
        if f is not None and column in f.columns:
            values |= {str(v) for v in f[column].dropna().unique()}
    return sorted(values)


def _provenance(config_text: str, manifest_digest: str | None, code_version: str | None, frames: list) -> str:
    cfg = config_digest(config_text) if config_text else "missing"
    items = [
        ("config sha256", cfg),
        ("data manifest sha256", manifest_digest or "missing"),
        ("code version", code_version or "missing"),
    ]
    out = ['<dl class="prov">'] + [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items] + ["</dl>"]
    for label, col in (("config", "config_hash"), ("manifest", "manifest_digest"), ("code", "code_version")):
        seen = _distinct(frames, col)
        if len(seen) > 1:
            out.append(
                msg(
                    f"The rows mix {len(seen)} different {label} versions ({', '.join(seen)}): "
                    "numbers below are not all from the same setup."
                )
            )
    for key, val in items:
        if val == "missing":
            out.append(msg(f"No {key} was given: the numbers in this report cannot be traced to it."))
    return "\n".join(out)


def _quality_section(quality_summary: pd.DataFrame | None) -> str:
    if quality_summary is None or len(quality_summary) == 0:
        return msg(
            "No image-quality results: the experiment has no finished image-quality runs, or they did not "
            "record their metrics."
        )
    q = quality_summary if "mean" in quality_summary.columns else quality_table(quality_summary)
    q = q.copy()
    if {"mean", "sd"} <= set(q.columns):
        q.insert(
            q.columns.get_loc("mean"),
            "mean ± sd",
            [f"{num(m)} ± {num(s)}" for m, s in zip(q["mean"], q["sd"], strict=True)],
        )
    return (
        "<p>Mean ± sd across (split, seed) runs; 95% percentile-bootstrap CI of the mean over runs.</p>"
        + table_html(q, 4)
    )


def _segmentation_section(seg_rows: pd.DataFrame | None) -> str:
    if seg_rows is None or len(seg_rows) == 0:
        return msg(
            "No per-case segmentation rows: the experiment has no finished segmentation runs, or its runs "
            "did not record per-case results, so no arm can be compared."
        )
    seg = segmentation_table(seg_rows)
    parts = [
        "<p>Per split: mean ± sd over cases (all seeds). Split <code>all</code>: pooled over splits; "
        "<code>sd_splits</code> is the spread of the split means.</p>",
        table_html(seg),
    ]
    if "reason" in seg_rows.columns:
        bad = seg_rows[pd.to_numeric(seg_rows["value"], errors="coerce").isna()]
        if len(bad):
            counts = bad.groupby(["arm", "metric"])["reason"].agg(lambda r: ", ".join(sorted(set(map(str, r)))))
            lines = "; ".join(f"{a} / {m}: {r}" for (a, m), r in counts.items())
            parts.append(msg(f"{len(bad)} per-case value(s) are missing (NaN) and were left out: {lines}"))
    return "\n".join(parts)


def _significance_section(significance: pd.DataFrame | None) -> str:
    if significance is None or len(significance) == 0:
        return msg("No significance table: there were no per-case rows to compare.")
    pooled = significance[significance["scope"] == "pooled"]
    split = significance[significance["scope"] == "split"]
    alpha = pooled["alpha"].dropna().iloc[0] if pooled["alpha"].notna().any() else float("nan")
    m = ", ".join(f"{k}: {v}" for k, v in pooled.groupby("metric", sort=False)["p_holm"].count().items())
    base, several = main_baseline(significance), significance["baseline"].nunique() > 1
    if several:  # a training-data fraction's arms against its own baseline (benchmark.analysis.significance)
        fraction = pooled["arm"].map(lambda a: split_suffix(str(a))[1])
        m = ", ".join(
            f"{k} at {f:g}: {v}" for (k, f), v in pooled.groupby(["metric", fraction])["p_holm"].count().items()
        )
    against = (
        f"Each arm against <code>{esc(base)}</code> at its own training-data fraction (column <code>baseline</code>:"
        f" <code>{esc(base)}@f&lt;f&gt;</code> for an arm <code>@f&lt;f&gt;</code>, which itself is against "
        f"<code>{esc(base)}</code>; same test cases)"
        if several
        else f"Each arm against <code>{esc(base)}</code>"
    )
    family = "of one training-data fraction " if several else ""
    parts = [
        f"<p>{against}. Verdict: Nadeau-Bengio "
        "corrected resampled t-test on the per-split mean differences (two-sided), Holm step-down adjusted "
        f"across all arms {family}compared per metric (<code>p_holm</code>; m = {m} tested), at alpha = {alpha:g}. "
        "<code>t_ci_low</code>/<code>t_ci_high</code>: the corrected t interval of the mean difference arm - "
        "baseline; <code>mde</code>: the minimum detectable effect (80% power, two-sided, at <code>mde_alpha</code>"
        " = alpha/m); <code>lucky_splits</code>: splits on which the one-split Wilcoxon test alone (p &lt; 0.05) "
        "claims a gain; <code>ci_low</code>/<code>ci_high</code>: a case-level bootstrap (95%, stratified by split), "
        "which ignores the variation between splits.</p>",
        table_html(pooled[[c for c in _columns(_SIG_COLUMNS, several) if c in pooled.columns]], 4),
    ]
    if len(split):
        parts.append("<h3>Within each split: paired one-sided Wilcoxon signed-rank test (arm better)</h3>")
        parts.append(f"<p><code>wilcoxon_p_holm</code>: Holm-adjusted across arms {family}within the split.</p>")
        parts.append(table_html(split[[c for c in _columns(_SPLIT_COLUMNS, several) if c in split.columns]], 4))
    problems = significance[significance["reason"].fillna("").astype(str) != ""]
    # One message per distinct problem, naming every arm it hits, so a short split does not flood the page.
    for (metric, scope, split, reason), grp in problems.groupby(["metric", "scope", "split", "reason"], sort=False):
        where = f"split {split}" if scope == "split" else "pooled"
        parts.append(msg(f"{metric}, {where}, arm(s) {', '.join(map(str, grp['arm']))}: {reason}"))
    for r in pooled.itertuples():
        # The Holm family is described once above; keep only the arm-specific part of each note.
        note = "; ".join(n for n in str(r.note).split("; ") if n and not n.startswith("Holm step-down"))
        if note:
            parts.append(f"<p><small>{esc(r.arm)} ({esc(r.metric)}): {esc(note)}</small></p>")
    return "\n".join(parts)


def _columns(columns: list[str], baseline: bool) -> list[str]:
    """``columns`` with ``baseline`` after ``arm`` when the arms have different baselines (training-data fractions)."""
    return [columns[0], "baseline", *columns[1:]] if baseline else columns


def _figures_section(figures: Mapping[str, str | Path] | None) -> str:
    if not figures:
        return msg("No figures were given.")
    parts = []
    for title, path in figures.items():
        if path is None:
            parts.append(msg(f"Figure '{title}' was not drawn (see Notes for why)."))
            continue
        p = Path(path)
        if not p.is_file():
            parts.append(msg(f"Figure '{title}' is missing ({path}): its input data was absent or empty."))
            continue
        parts.append(img(p, title, caption=title))
    return "\n".join(parts)


def write_report(
    out_path: str | Path,
    *,
    config_text: str,
    manifest_digest: str | None,
    code_version: str | None,
    quality_summary: pd.DataFrame | None,
    seg_rows: pd.DataFrame | None,
    significance: pd.DataFrame | None,
    figures: Mapping[str, str | Path] | None = None,
    notes: Sequence[str] = (),
    title: str = "lge-synthbench study report",
    protocol: str | None = None,
    forest: str | Path | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the study's HTML report (one file, no external references) atomically.

    It opens with the answer (:func:`benchmark.analysis.headline.first_screen`: one line per arm, the forest plot,
    Table 1), then the details: provenance, notes, the full significance and segmentation tables, image quality,
    figures and the exact config.

    Args:
        out_path: the ``.html`` file to write; its folder is created.
        config_text: the exact resolved config (YAML); shown in full and hashed (:func:`config_digest`).
        manifest_digest: sha256 of the data manifest the study read.
        code_version: the suite's version / git revision that produced the numbers.
        quality_summary: :func:`benchmark.analysis.tables.quality_table` output, or raw image-quality rows.
        seg_rows: per-case segmentation rows (tabulated per arm and split).
        significance: :func:`benchmark.analysis.significance.significance_table` output.
        figures: ``{title: png path}``; each image is embedded; a missing file becomes a message.
        notes: extra lines shown near the top (e.g. problems met while collecting runs).
        title: the page title.
        protocol: the generator-training protocol; default: ``splits.protocol`` read from ``config_text``.
        forest: the forest plot's PNG for the first screen (:func:`benchmark.analysis.plots.plot_forest`).
        sections: further ``(title, html)`` sections, after the segmentation results (e.g. robustness).

    Returns:
        The path written.
    """
    out_path = Path(out_path)
    proto, leaky = _protocol(config_text, protocol)
    if quality_summary is not None and len(quality_summary) and "mean" not in quality_summary.columns:
        quality_summary = quality_table(quality_summary)
    cfg = config_digest(config_text) if config_text else "missing"
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">protocol <code>{esc(proto)}</code> · config <code>{esc(cfg)}</code> · code '
        f"<code>{esc(code_version or 'missing')}</code> · details, provenance and every table below the answer</p>",
    ]
    if leaky:
        body.append(_LEAKY)
    body.append(first_screen(significance, quality_summary, forest, baseline=main_baseline(significance)))
    body += [
        "<h2>Provenance</h2>",
        _provenance(config_text, manifest_digest, code_version, [seg_rows, quality_summary]),
        f"<p>Generator-training protocol: <code>{esc(proto)}</code></p>",
    ]
    if notes:
        body.append("<h2>Notes</h2>" + "".join(msg(n) for n in notes))
    body += ["<h2>Segmentation: significance against the baseline</h2>", _significance_section(significance)]
    body += ["<h2>Segmentation results per arm</h2>", _segmentation_section(seg_rows)]
    for heading, html in sections:
        body += [f"<h2>{esc(heading)}</h2>", html]
    body += ["<h2>Image quality per generator</h2>", _quality_section(quality_summary)]
    body += ["<h2>Figures</h2>", _figures_section(figures)]
    body += [
        "<h2>Exact configuration</h2>",
        f"<pre>{esc(config_text)}</pre>" if config_text else msg("The configuration text is missing."),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_path, page)


_LEAKY = (
    '<div class="leaky">LEAKY: under the "shared" protocol the generators were trained on all patients, including '
    "every split's test patients. Gains from synthetic data may be inflated; use per_split or disjoint_pool for a "
    "clean estimate.</div>"
)


def build_report(
    out_path: str | Path,
    *,
    seg_rows: pd.DataFrame | None,
    quality_rows: pd.DataFrame | None,
    split_sizes: Any,
    config_text: str,
    manifest_digest: str | None,
    code_version: str | None,
    curves: pd.DataFrame | None = None,
    k_scores: pd.DataFrame | None = None,
    alpha: float = 0.05,
    baseline: str = "real",
    min_pairs: int = 5,
    arms: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    figures: Mapping[str, str | Path] | None = None,
    robust_rows: pd.DataFrame | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Compute the tables, significance and figures from tidy rows and write them with the HTML report.

    Next to ``out_path`` it writes ``<stem>_files/``: the tables as CSV, Markdown and LaTeX and the figures as
    PNG and SVG. Missing or empty inputs become messages in the report.

    Args:
        out_path: the ``.html`` report to write.
        seg_rows: per-case segmentation rows (``benchmark.results.COLUMNS``).
        quality_rows: image-quality rows (per-case and/or set-level).
        split_sizes: train/test sizes per split, for the corrected t-test.
        config_text, manifest_digest, code_version: provenance (resolved YAML, data manifest sha256, code version).
        curves, k_scores: optional training curves ``run, step, metric, value`` and cluster-selection scores
            ``k, silhouette, davies_bouldin``.
        alpha, baseline, min_pairs, arms: the tests' level, reference arm, fewest paired cases per split, and the
            arms the study configured (so arms without results are listed).
        notes: extra lines for the report (notes on set-level metrics, e.g. FID's, are added as one line).
        figures: extra ``{title: png path}`` drawn by the caller (e.g. the real-vs-synthetic montage).
        robust_rows: robustness rows (``benchmark.results.SHIFT_COLUMNS``); None: the study ran no robustness
            study and the report has no robustness section (:mod:`benchmark.analysis.robustness`).
        sections: further ``(title, html)`` sections drawn by the caller, after the segmentation results (e.g. the
            training budget per arm, :mod:`benchmark.analysis.budget`).

    Returns:
        The report's path.
    """
    out_path = Path(out_path)
    files = out_path.with_name(out_path.stem + "_files")
    notes = list(dict.fromkeys([*notes, *quality_notes(quality_rows)]))
    significance = _significance(seg_rows, split_sizes, alpha=alpha, baseline=baseline, min_pairs=min_pairs, arms=arms)
    quality = quality_table(quality_rows)
    _write_tables(files, significance, quality, seg_rows)
    drawn = plots.report_figures(files, seg_rows, quality_rows, curves=curves, k_scores=k_scores, notes=notes)
    drawn.update(figures or {})
    try:
        forest = plots.plot_forest(significance, files / "forest_dice")["png"]
    except DataError as exc:
        forest = None
        notes.append(f"Forest plot not drawn: {exc}")
    sections = list(sections)
    if robust_rows is not None:
        html = robustness_section(robust_rows, seg_rows, split_sizes, files, baseline=baseline, alpha=alpha, arms=arms)
        sections.append(("Robustness under distribution shift", html))
    return write_report(
        out_path,
        sections=sections,
        config_text=config_text,
        manifest_digest=manifest_digest,
        code_version=code_version,
        quality_summary=quality,
        seg_rows=seg_rows,
        significance=significance,
        figures=drawn,
        notes=notes,
        forest=forest,
    )


def _significance(seg_rows: pd.DataFrame | None, split_sizes: Any, **options: Any) -> pd.DataFrame:
    """Dice and HD95 of every arm against the baseline, one table (``significance_table`` per metric)."""
    tables = [significance_table(seg_rows, split_sizes, metric=m, **options) for m in ("dice", "hd95")]
    return pd.concat(tables, ignore_index=True)


def _write_tables(files: Path, significance: pd.DataFrame, quality: pd.DataFrame, seg_rows: pd.DataFrame | None):
    """The report's tables as CSV, Markdown and LaTeX in its files folder."""
    write_table(significance, files / "significance")
    write_table(quality, files / "image_quality")
    write_table(segmentation_table(seg_rows), files / "segmentation")
