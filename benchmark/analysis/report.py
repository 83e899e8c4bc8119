"""A single self-contained HTML report of a study: provenance, tables, figures and every gap in the data.

Images are embedded as base64 data URIs and the styling is inline CSS, so the file can be mailed, archived or
logged as one artifact and still opens offline. Missing inputs never stop the report: each becomes a visible
message saying what is missing and what that usually means.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark.analysis import plots
from benchmark.analysis.significance import significance_table
from benchmark.analysis.tables import format_frame, quality_notes, quality_table, segmentation_table, write_table
from benchmark.atomic import write_text_atomic

__all__ = ["LEAKY_PROTOCOLS", "build_report", "config_digest", "write_report"]

# Same set as benchmark.data.splits.LEAKY_PROTOCOLS; kept here so the report renders without the data stack.
LEAKY_PROTOCOLS = ("shared",)

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1150px;
color:#1d2329;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;border-bottom:2px solid #2b6cb0;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2.2rem;color:#2b4a6f}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.85rem}
th,td{border:1px solid #cfd6de;padding:.25rem .55rem;text-align:right}
th{background:#edf2f7;position:sticky;top:0}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#f8fafc}
.msg{border-left:4px solid #d69e2e;background:#fffbea;padding:.5rem .8rem;margin:.5rem 0}
.leaky{border-left:4px solid #c53030;background:#fff5f5;padding:.6rem .9rem;margin:.8rem 0;font-weight:600}
.ok{border-left:4px solid #2f855a;background:#f0fff4;padding:.5rem .8rem;margin:.5rem 0}
.improves{color:#22753f;font-weight:600}.worse{color:#b83232;font-weight:600}.noevidence{color:#555}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dl.prov dt{font-weight:600}
dl.prov dd{margin:0;font-family:monospace}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e2e8f0}
figcaption{font-size:.85rem;color:#4a5568}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.7rem;overflow:auto;font-size:.8rem;max-height:30rem}
"""

_SIG_COLUMNS = [
    "arm", "metric", "n_splits", "n_pairs", "mean_diff", "ci_low", "ci_high", "effect_dz", "rank_biserial",
    "t_stat", "df", "test_train_ratio", "t_p", "p_holm", "verdict", "reason",
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


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    v = float(value)
    return "-" if v != v else f"{v:.4g}"


def _msg(text: str, cls: str = "msg") -> str:
    return f'<div class="{cls}">{_esc(text)}</div>'


def _table_html(frame: pd.DataFrame, digits: int = 3) -> str:
    """An HTML table; text columns left-aligned, verdicts coloured."""
    text = format_frame(frame, digits)
    is_text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    head = "".join(
        f'<th class="{"text" if t else "num"}">{_esc(c)}</th>' for c, t in zip(frame.columns, is_text, strict=True)
    )
    body = []
    for row in text.itertuples(index=False):
        cells = []
        for col, val, t in zip(frame.columns, row, is_text, strict=True):
            cls = "text" if t else "num"
            if col == "verdict" and val in ("improves", "worse", "no evidence"):
                cls += " " + val.replace(" ", "")
            cells.append(f'<td class="{cls}">{_esc(val)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
    out = ['<dl class="prov">'] + [f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items] + ["</dl>"]
    for label, col in (("config", "config_hash"), ("manifest", "manifest_digest"), ("code", "code_version")):
        seen = _distinct(frames, col)
        if len(seen) > 1:
            out.append(
                _msg(
                    f"The rows mix {len(seen)} different {label} versions ({', '.join(seen)}): "
                    "numbers below are not all from the same setup."
                )
            )
    for key, val in items:
        if val == "missing":
            out.append(_msg(f"No {key} was given: the numbers in this report cannot be traced to it."))
    return "\n".join(out)


def _quality_section(quality_summary: pd.DataFrame | None) -> str:
    if quality_summary is None or len(quality_summary) == 0:
        return _msg(
            "No image-quality results: the experiment has no finished image-quality runs, or they did not "
            "record their metrics."
        )
    q = quality_summary if "mean" in quality_summary.columns else quality_table(quality_summary)
    q = q.copy()
    if {"mean", "sd"} <= set(q.columns):
        q.insert(
            q.columns.get_loc("mean"),
            "mean ± sd",
            [f"{_num(m)} ± {_num(s)}" for m, s in zip(q["mean"], q["sd"], strict=True)],
        )
    return (
        "<p>Mean ± sd across (split, seed) runs; 95% percentile-bootstrap CI of the mean over runs.</p>"
        + _table_html(q, 4)
    )


def _segmentation_section(seg_rows: pd.DataFrame | None) -> str:
    if seg_rows is None or len(seg_rows) == 0:
        return _msg(
            "No per-case segmentation rows: the experiment has no finished segmentation runs, or its runs "
            "did not record per-case results, so no arm can be compared."
        )
    seg = segmentation_table(seg_rows)
    parts = [
        "<p>Per split: mean ± sd over cases (all seeds). Split <code>all</code>: pooled over splits; "
        "<code>sd_splits</code> is the spread of the split means.</p>",
        _table_html(seg),
    ]
    if "reason" in seg_rows.columns:
        bad = seg_rows[pd.to_numeric(seg_rows["value"], errors="coerce").isna()]
        if len(bad):
            counts = bad.groupby(["arm", "metric"])["reason"].agg(lambda r: ", ".join(sorted(set(map(str, r)))))
            lines = "; ".join(f"{a} / {m}: {r}" for (a, m), r in counts.items())
            parts.append(_msg(f"{len(bad)} per-case value(s) are missing (NaN) and were left out: {lines}"))
    return "\n".join(parts)


def _significance_section(significance: pd.DataFrame | None) -> str:
    if significance is None or len(significance) == 0:
        return _msg("No significance table: there were no per-case rows to compare.")
    pooled = significance[significance["scope"] == "pooled"]
    split = significance[significance["scope"] == "split"]
    alpha = pooled["alpha"].dropna().iloc[0] if pooled["alpha"].notna().any() else float("nan")
    m = ", ".join(f"{k}: {v}" for k, v in pooled.groupby("metric", sort=False)["p_holm"].count().items())
    parts = [
        f"<p>Each arm against <code>{_esc(pooled['baseline'].iloc[0])}</code>. Verdict: Nadeau-Bengio "
        "corrected resampled t-test on the per-split mean differences (two-sided), Holm step-down adjusted "
        f"across all arms compared per metric (<code>p_holm</code>; m = {m} tested), at alpha = {alpha:g}. "
        "The CI is a case-level bootstrap (95%, stratified by split) of the mean difference arm - baseline.</p>",
        _table_html(pooled[[c for c in _SIG_COLUMNS if c in pooled.columns]], 4),
    ]
    if len(split):
        parts.append("<h3>Within each split: paired one-sided Wilcoxon signed-rank test (arm better)</h3>")
        parts.append("<p><code>wilcoxon_p_holm</code>: Holm-adjusted across arms within the split.</p>")
        parts.append(_table_html(split[[c for c in _SPLIT_COLUMNS if c in split.columns]], 4))
    problems = significance[significance["reason"].fillna("").astype(str) != ""]
    # One message per distinct problem, naming every arm it hits, so a short split does not flood the page.
    for (metric, scope, split, reason), grp in problems.groupby(["metric", "scope", "split", "reason"], sort=False):
        where = f"split {split}" if scope == "split" else "pooled"
        parts.append(_msg(f"{metric}, {where}, arm(s) {', '.join(map(str, grp['arm']))}: {reason}"))
    for r in pooled.itertuples():
        # The Holm family is described once above; keep only the arm-specific part of each note.
        note = "; ".join(n for n in str(r.note).split("; ") if n and not n.startswith("Holm step-down"))
        if note:
            parts.append(f"<p><small>{_esc(r.arm)} ({_esc(r.metric)}): {_esc(note)}</small></p>")
    return "\n".join(parts)


def _figures_section(figures: Mapping[str, str | Path] | None) -> str:
    if not figures:
        return _msg("No figures were given.")
    parts = []
    for title, path in figures.items():
        if path is None:
            parts.append(_msg(f"Figure '{title}' was not drawn (see Notes for why)."))
            continue
        p = Path(path)
        if not p.is_file():
            parts.append(_msg(f"Figure '{title}' is missing ({path}): its input data was absent or empty."))
            continue
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{_esc(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(title)}</figcaption></figure>"
        )
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
) -> Path:
    """Write the study's HTML report (one file, no external references) atomically.

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

    Returns:
        The path written.
    """
    out_path = Path(out_path)
    proto, leaky = _protocol(config_text, protocol)
    frames = [seg_rows, quality_summary]
    body = [
        f"<h1>{_esc(title)}</h1>",
        "<h2>Provenance</h2>",
        _provenance(config_text, manifest_digest, code_version, frames),
        f"<p>Generator-training protocol: <code>{_esc(proto)}</code></p>",
    ]
    if leaky:
        body.append(
            '<div class="leaky">LEAKY: under the "shared" protocol the generators were trained on all '
            "patients, including every split's test patients. Gains from synthetic data may be inflated; "
            "use per_split or disjoint_pool for a clean estimate.</div>"
        )
    if notes:
        body.append("<h2>Notes</h2>" + "".join(_msg(n) for n in notes))
    body += ["<h2>Segmentation: significance against the baseline</h2>", _significance_section(significance)]
    body += ["<h2>Segmentation results per arm</h2>", _segmentation_section(seg_rows)]
    body += ["<h2>Image quality per generator</h2>", _quality_section(quality_summary)]
    body += ["<h2>Figures</h2>", _figures_section(figures)]
    body += [
        "<h2>Exact configuration</h2>",
        f"<pre>{_esc(config_text)}</pre>" if config_text else _msg("The configuration text is missing."),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_path, page)


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
    return write_report(
        out_path,
        config_text=config_text,
        manifest_digest=manifest_digest,
        code_version=code_version,
        quality_summary=quality,
        seg_rows=seg_rows,
        significance=significance,
        figures=drawn,
        notes=notes,
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
