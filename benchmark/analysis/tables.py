"""Summary tables (image quality per generator, segmentation per arm) and their CSV, Markdown and LaTeX writers.

The writers are small and local on purpose: pandas' ``to_markdown`` needs the optional ``tabulate`` package, and a
hand-written LaTeX tabular keeps the output stable across pandas versions (booktabs rules, escaped text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import stats
from benchmark.atomic import is_temp, write_text_atomic
from benchmark.errors import DataError

__all__ = [
    "TABLE1_METRICS",
    "format_frame",
    "read_rows",
    "table1",
    "quality_notes",
    "quality_table",
    "segmentation_table",
    "to_latex",
    "to_markdown",
    "write_table",
]

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def read_rows(path: str | Path) -> pd.DataFrame:
    """Read tidy rows from one CSV file, or from every ``*.csv`` under a folder (recursively, sorted).

    Args:
        path: a ``.csv`` file or a folder of them (e.g. one per-case file per run).

    Returns:
        The concatenated rows (columns are the union; absent ones are NaN); empty for a folder without CSVs.

    Raises:
        DataError: when ``path`` does not exist or a file cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    files = sorted(f for f in path.rglob("*.csv") if not is_temp(f)) if path.is_dir() else [path]
    frames = []
    for f in files:
        try:
            frames.append(pd.read_csv(f))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f, f"cannot read as CSV: {exc}") from exc
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _need(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(name, f"missing columns {missing}")


def quality_table(
    quality_rows: pd.DataFrame | None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Image-quality metrics per generator: mean +- sd across (split, seed) runs, with a bootstrap CI.

    Per-case rows (a ``case_id`` column with a value) are first averaged within their run, so every run counts
    once next to the distribution-level rows (FID, KID, ...). The CI is the percentile bootstrap of the mean over
    runs (:func:`benchmark.stats.bootstrap_ci`).

    Args:
        quality_rows: rows with ``split, seed, generator, metric, value`` (``case_id`` and ``backbone`` optional).
        n_boot: bootstrap replicates.
        confidence: the interval's coverage.
        seed: the bootstrap's random seed.

    Returns:
        Columns ``generator, metric, backbone, mean, sd, ci_low, ci_high, n_runs, n_nan``, one row per
        (generator, metric, backbone); empty when there are no rows. ``backbone`` is "" when not recorded.
    """
    cols = ["generator", "metric", "backbone", "mean", "sd", "ci_low", "ci_high", "n_runs", "n_nan"]
    if quality_rows is None or len(quality_rows) == 0:
        return pd.DataFrame(columns=cols)
    _need(quality_rows, ("split", "seed", "generator", "metric", "value"), "quality_rows")
    q = quality_rows.copy()
    q["backbone"] = q["backbone"].fillna("").astype(str) if "backbone" in q.columns else ""
    q["value"] = pd.to_numeric(q["value"], errors="coerce")
    run_keys = ["generator", "metric", "backbone", "split", "seed"]
    per_run = q.groupby(run_keys, as_index=False, dropna=False)["value"].mean()
    out = []
    for (gen, metric, backbone), grp in per_run.groupby(["generator", "metric", "backbone"], sort=True):
        v = grp["value"].to_numpy(dtype=np.float64)
        finite = v[np.isfinite(v)]
        ci = stats.bootstrap_ci(finite, n_boot=n_boot, confidence=confidence, seed=seed)
        sd = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
        out.append(
            [gen, metric, backbone, ci.estimate, sd, ci.low, ci.high, int(finite.size), int(v.size - finite.size)]
        )
    return pd.DataFrame(out, columns=cols)


# The paper's Table 1 columns first (metric, label, lower is better); mask fidelity and other realism metrics follow.
TABLE1_METRICS = (("fid", "FID", True), ("kid", "KID", True), ("mmd", "MMD", True), ("ms_ssim", "MS-SSIM", False),
                  ("psnr", "PSNR (dB)", False))  # fmt: skip
_EXTRA_LABELS = {"fid_at_n": ("FID equal n", True), "kid_at_n": ("KID equal n", True), "mmd_rbf": ("MMD (RBF)", True),
                 "c2st_auc": ("C2ST AUC", True), "c2st_accuracy": ("C2ST accuracy", True)}  # fmt: skip
# privacy checks and per-case detail: in the full image-quality table only
_NOT_REALISM = ("memorisation_", "nn_distance_", "c2st_prob_")


def _table1_order(metrics: Sequence[str]) -> list[str]:
    present = set(metrics)
    fixed = [m for m, _, _ in TABLE1_METRICS if m in present]
    fidelity = sorted(m for m in present if m.startswith("dice_") and not m.endswith("_mean"))
    rest = sorted(
        m
        for m in present - set(fixed) - set(fidelity)
        if not m.startswith(_NOT_REALISM) and not (m.endswith("_mean") and m[: -len("_mean")] in present)
    )
    return fixed + fidelity + rest


def table1(quality: pd.DataFrame | None) -> pd.DataFrame:
    """The paper's Table 1: one row per generator, one column per realism / fidelity metric present.

    Columns in order: FID, KID, MMD, MS-SSIM, PSNR, mask fidelity (``dice_<structure>``), then any other metric
    present except the memorisation checks and the ``<m>_mean`` duplicates of a per-case metric ``<m>``.

    Args:
        quality: :func:`quality_table` output (``generator, metric, backbone, mean, sd, n_runs``).

    Returns:
        Long rows ``generator, metric, label, lower_is_better, mean, sd, n_runs, backbone`` in table order
        (``label`` is the column title, ``lower_is_better`` None when the direction is not known); empty without rows.
    """
    cols = ["generator", "metric", "label", "lower_is_better", "mean", "sd", "n_runs", "backbone"]
    if quality is None or len(quality) == 0:
        return pd.DataFrame(columns=cols)
    known = {m: (label, low) for m, label, low in TABLE1_METRICS} | _EXTRA_LABELS
    out = []
    for metric in _table1_order(list(pd.unique(quality["metric"]))):
        label, low = known.get(metric, (metric, None))
        if metric.startswith("dice_"):
            label, low = f"mask Dice {metric[len('dice_') :]}", False
        elif metric.startswith(("fid", "kid", "mmd")) and low is None:
            low = True
        for r in quality[quality["metric"] == metric].itertuples():
            out.append([r.generator, metric, label, low, r.mean, r.sd, r.n_runs, r.backbone])
    return pd.DataFrame(out, columns=cols)


def quality_notes(quality_rows: pd.DataFrame | None) -> list[str]:
    """The notes that set-level image-quality rows carry (e.g. an FID from rank-deficient covariances), as one line.

    Args:
        quality_rows: image-quality rows; set-level rows (``case_id`` empty) may have a ``note``.

    Returns:
        ``[]`` when no row has a note, else one line naming each noted metric, in how many of its runs, and its
        distinct notes.
    """
    if quality_rows is None or len(quality_rows) == 0 or "note" not in quality_rows.columns:
        return []
    sets = quality_rows[quality_rows["case_id"].isna()] if "case_id" in quality_rows.columns else quality_rows
    noted = sets[sets["note"].fillna("").astype(str) != ""]
    parts = []
    for metric, grp in noted.groupby("metric", sort=True):
        distinct = "; ".join(dict.fromkeys(grp["note"].astype(str)))
        parts.append(f"{metric} in {len(grp)} of {int((sets['metric'] == metric).sum())} run(s): {distinct}")
    return ["Image quality: " + " | ".join(parts)] if parts else []


def segmentation_table(seg_rows: pd.DataFrame | None, *, metrics: Sequence[str] = ("dice", "hd95")) -> pd.DataFrame:
    """Segmentation results per arm and metric, per split and pooled over splits.

    Per split: mean and sd over the per-case rows (all seeds). Pooled ("all"): the mean and sd over every row,
    plus ``sd_splits``, the sd of the per-split means (the between-split spread the corrected test uses).

    Args:
        seg_rows: per-case rows with ``split, arm, case_id, metric, value``.
        metrics: the metrics to tabulate, in this order.

    Returns:
        Columns ``arm, metric, split, mean, sd, sd_splits, n, n_nan``; empty when there are no rows.
    """
    cols = ["arm", "metric", "split", "mean", "sd", "sd_splits", "n", "n_nan"]
    if seg_rows is None or len(seg_rows) == 0:
        return pd.DataFrame(columns=cols)
    _need(seg_rows, ("split", "arm", "case_id", "metric", "value"), "seg_rows")
    s = seg_rows[seg_rows["metric"].isin(metrics)].copy()
    s["value"] = pd.to_numeric(s["value"], errors="coerce")
    s["split"] = s["split"].astype(str)
    arm_order = list(pd.unique(s["arm"]))
    out = []
    for arm in arm_order:
        for metric in metrics:
            grp = s[(s["arm"] == arm) & (s["metric"] == metric)]
            if grp.empty:
                continue
            split_means = []
            for split, sg in sorted(grp.groupby("split"), key=lambda kv: _split_key(kv[0])):
                v = sg["value"].to_numpy(dtype=np.float64)
                out.append(
                    [arm, metric, split, *_mean_sd(v), np.nan, int(np.isfinite(v).sum()), int((~np.isfinite(v)).sum())]
                )
                split_means.append(out[-1][3])
            v = grp["value"].to_numpy(dtype=np.float64)
            sm = np.asarray(split_means, dtype=np.float64)
            sd_splits = float(np.nanstd(sm, ddof=1)) if np.isfinite(sm).sum() > 1 else float("nan")
            out.append(
                [arm, metric, "all", *_mean_sd(v), sd_splits, int(np.isfinite(v).sum()), int((~np.isfinite(v)).sum())]
            )
    return pd.DataFrame(out, columns=cols)


def _mean_sd(v: np.ndarray) -> tuple[float, float]:
    f = v[np.isfinite(v)]
    mean = float(np.mean(f)) if f.size else float("nan")
    sd = float(np.std(f, ddof=1)) if f.size > 1 else float("nan")
    return mean, sd


def _split_key(split: str) -> tuple[int, object]:
    return (0, int(split)) if str(split).lstrip("-").isdigit() else (1, str(split))


def _fmt(value: object, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 10**6):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(value)


def format_frame(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Every cell as text: floats to ``digits`` decimals (scientific for tiny/huge values), NaN as "-".

    Args:
        frame: any table.
        digits: decimals for floats.

    Returns:
        A frame of strings with the same shape, index and columns.
    """
    return frame.apply(lambda col: col.map(lambda v: _fmt(v, digits))).astype(str)


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, ``|`` in text escaped).

    Args:
        frame: the table (its index is not written).
        digits: decimals for floats.

    Returns:
        The Markdown text, ending with a newline.
    """
    text = format_frame(frame, digits)
    header = "| " + " | ".join(str(c).replace("|", r"\|") for c in frame.columns) + " |"
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = ["| " + " | ".join(v.replace("|", r"\|") for v in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(frame: pd.DataFrame, digits: int = 3, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs LaTeX ``table`` (needs ``\\usepackage{booktabs}``); text cells escaped.

    Args:
        frame: the table (its index is not written).
        digits: decimals for floats.
        caption: optional caption.
        label: optional ``\\label``.

    Returns:
        The LaTeX source, ending with a newline.
    """
    text = format_frame(frame, digits)
    align = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns)
    lines = ["\\begin{table}[ht]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule"]
    lines.append(" & ".join(_latex_escape(str(c)) for c in frame.columns) + " \\\\")
    lines.append("\\midrule")
    lines += [" & ".join(_latex_escape(v) for v in row) + " \\\\" for row in text.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    stem: str | Path,
    *,
    formats: Sequence[str] = ("csv", "md", "tex"),
    digits: int = 3,
    caption: str | None = None,
) -> dict[str, Path]:
    """Write a table as ``<stem>.csv`` (full precision), ``<stem>.md`` and ``<stem>.tex``, each atomically.

    Args:
        frame: the table.
        stem: output path without suffix; its folder is created.
        formats: any of "csv", "md", "tex".
        digits: decimals in the Markdown and LaTeX versions.
        caption: LaTeX caption.

    Returns:
        ``{format: path}`` of the files written.

    Raises:
        ValueError: for an unknown format.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    writers = {
        "csv": lambda: frame.to_csv(index=False),
        "md": lambda: to_markdown(frame, digits),
        "tex": lambda: to_latex(frame, digits, caption=caption, label=f"tab:{stem.name}"),
    }
    out = {}
    for fmt in formats:
        if fmt not in writers:
            raise ValueError(f"unknown table format {fmt!r}; use one of {sorted(writers)}")
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_text_atomic(path, writers[fmt]())
        out[fmt] = path
    return out
