"""The report's first screen: the answer per arm, the forest plot of the Dice differences, and Table 1.

One line per arm present in the significance table (whatever the arms are called): the verdict of the corrected
test across splits, the mean Dice difference with its corrected t CI, the minimum detectable effect (so "no
evidence" reads as "no evidence of a gain larger than X"), how many single splits the one-split protocol would
have called a gain on, and the same for HD95 in brief.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis.html_parts import esc, img, msg
from benchmark.analysis.significance import POWER, SINGLE_SPLIT_ALPHA
from benchmark.analysis.tables import table1

__all__ = ["answer_lines", "first_screen"]

_UNITS = {"dice": (100.0, "points"), "hd95": (1.0, "mm")}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def answer_lines(significance: pd.DataFrame | None) -> pd.DataFrame:
    """One row per arm and metric with the numbers of the first screen, in the metric's display units.

    Args:
        significance: :func:`benchmark.analysis.significance.significance_table` output (any metrics).

    Returns:
        Columns ``arm, metric, verdict, effect, ci_low, ci_high, mde, lucky, n_splits, unit, reason, baseline``
        (Dice in points, i.e. x100; HD95 in mm), arms in the table's order; empty when there is nothing pooled.
    """
    cols = ["arm", "metric", "verdict", "effect", "ci_low", "ci_high", "mde", "lucky", "n_splits", "unit", "reason",
            "baseline"]  # fmt: skip
    if significance is None or len(significance) == 0:
        return pd.DataFrame(columns=cols)
    out = []
    for r in significance[significance["scope"] == "pooled"].itertuples():
        scale, unit = _UNITS.get(str(r.metric), (1.0, ""))
        lucky = r.lucky_splits if pd.notna(r.lucky_splits) else np.nan
        out.append([r.arm, r.metric, r.verdict, r.mean_diff * scale, r.t_ci_low * scale, r.t_ci_high * scale,
                    r.mde * scale, lucky, r.n_splits, unit, r.reason, r.baseline])  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def _f(value: float, digits: int = 2, sign: bool = False) -> str:
    v = float(value)
    if not np.isfinite(v):
        return "-"
    text = f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
    return text.replace("-", "\u2212")  # a true minus sign reads better in a table


def _verdict_cell(line: pd.Series | None) -> str:
    if line is None:
        return '<td class="text">-</td>'
    verdict = str(line["verdict"]) or "not tested"
    cls, wrap = verdict.replace(" ", ""), " nw"
    if verdict == "no evidence" and np.isfinite(float(line["mde"])):
        extra = f" of a gain larger than {_f(line['mde'], 1)} {line['unit']}"
    elif verdict == "not tested":
        extra, wrap = (f": {line['reason']}" if line["reason"] else ""), ""
    else:
        extra = ""
    return f'<td class="text{wrap}"><span class="{cls}">{esc(verdict)}</span>{esc(extra)}</td>'


def _claims(line: pd.Series | None) -> str:
    if line is None or pd.isna(line["lucky"]):
        return "-"
    return f"{int(line['lucky'])} of {int(line['n_splits'])}"


def _claims_cell(line: pd.Series | None) -> str:
    # amber where a split alone would have told another story than the corrected verdict
    lonely = line is not None and pd.notna(line["lucky"]) and line["lucky"] > 0 and line["verdict"] != "improves"
    return f'<td class="num nw{" lucky" if lonely else ""}">{_claims(line)}</td>'


def _arm_row(arm: str, dice: pd.Series | None, hd95: pd.Series | None, baseline: str) -> str:
    line = dice if dice is not None else hd95
    other = line is not None and str(line["baseline"]) != baseline  # a training-data fraction's own baseline
    vs = f" <small>vs {esc(line['baseline'])}</small>" if other else ""
    cells = [f'<td class="text nw"><b>{esc(arm)}</b>{vs}</td>', _verdict_cell(dice)]
    if dice is not None and np.isfinite(float(dice["effect"])):
        ci = f"[{_f(dice['ci_low'], sign=True)}, {_f(dice['ci_high'], sign=True)}]"
        ci = ci if np.isfinite(dice["ci_low"]) else ""
        cells += [
            f'<td class="num nw">{_f(dice["effect"], sign=True)} {ci}</td>',
            f'<td class="num nw">{_f(dice["mde"])}</td>',
        ]
    else:
        cells += ['<td class="num">-</td>'] * 2
    cells.append(_claims_cell(dice))
    if hd95 is not None and str(hd95["verdict"]) not in ("", "not tested"):
        cls = str(hd95["verdict"]).replace(" ", "")
        brief = f"{_f(hd95['effect'], sign=True)}; MDE {_f(hd95['mde'])}; {_claims(hd95)}"
        cells.append(f'<td class="text"><span class="{cls}">{esc(hd95["verdict"])}</span> ({esc(brief)})</td>')
    else:
        cells.append('<td class="text">not tested</td>')
    return "<tr>" + "".join(cells) + "</tr>"


_PHRASES = {  # verdict: (one arm, several arms)
    "improves": ("improves", "improve"),
    "no evidence": ("shows no evidence of a change", "show no evidence of a change"),
    "worse": ("is worse", "are worse"),
}


def _summary(dice: pd.DataFrame) -> str:
    counts = dice["verdict"].replace("", "not tested").value_counts()
    parts = []
    for verdict, (one, several) in _PHRASES.items():
        k = int(counts.get(verdict, 0))
        parts.append(f"{k} {one if k == 1 else several}")
    if counts.get("not tested", 0):
        parts.append(f"{int(counts['not tested'])} could not be tested")
    return f"of {len(dice)} arms, " + ", ".join(parts)


def _lines_html(lines: pd.DataFrame, baseline: str, alpha: float) -> str:
    by = {(r.arm, r.metric): lines.loc[r.Index] for r in lines.itertuples()}
    arms = list(dict.fromkeys(lines["arm"]))
    dice = lines[lines["metric"] == "dice"]
    n_splits = int(dice["n_splits"].max()) if len(dice) else 0
    head = (
        "<tr><th class=text>arm</th><th class=text>Dice verdict</th><th class=nw>Dice difference, points [95% CI]</th>"
        "<th class=nw>MDE, points</th><th class=nw>single-split claims</th>"
        "<th class=text>HD95 verdict (difference, mm; MDE, mm; claims)</th></tr>"
    )
    rows = "".join(_arm_row(a, by.get((a, "dice")), by.get((a, "hd95")), baseline) for a in arms)
    own = (
        f" (an arm trained on a fraction f of the training patients, <code>@f&lt;f&gt;</code>: than "
        f"<code>{esc(baseline)}@f&lt;f&gt;</code>, and that one than <code>{esc(baseline)}</code>)"
        if (lines["baseline"].astype(str) != baseline).any()
        else ""
    )
    return (
        f'<p class="answer">Does an arm\'s training data make the segmentation U-Net better than '
        f"<code>{esc(baseline)}</code> alone{own}? Dice over {n_splits} repeated splits: "
        f"<b>{esc(_summary(dice))}</b>.</p>"
        f'<table class="lines"><thead>{head}</thead><tbody>{rows}</tbody></table>'
        f'<p class="small">Verdict: Nadeau-Bengio corrected resampled t-test on the per-split mean differences, '
        f"two-sided, Holm across arms{' of one training-data fraction' if own else ''}, alpha = {alpha:g}; "
        "CI: the corrected t interval. MDE: the smallest true "
        f"difference this design detects with {POWER:.0%} power at the level alpha/m that Holm guarantees. "
        f"Single-split claims: splits on which a one-tailed paired Wilcoxon test alone (p &lt; {SINGLE_SPLIT_ALPHA:g},"
        " the one-split protocol) reports a gain; amber where the verdict across splits disagrees.</p>"
    )


def _table1_html(quality: pd.DataFrame | None) -> str:
    t1 = table1(quality)
    if t1.empty:
        return msg("Table 1: no image-quality results.")
    metrics = list(dict.fromkeys(t1["metric"]))
    gens = sorted(pd.unique(t1["generator"]))
    backbones = sorted({b for b in t1["backbone"].astype(str) if b})
    columns = {m: _column(t1[t1["metric"] == m]) for m in metrics}
    head = "".join(f"<th>{esc(columns[m][0])}</th>" for m in metrics)
    body = []
    for g in gens:
        missing = '<td class="num">-</td>'
        cells = [f'<td class="text nw">{esc(g)}</td>'] + [columns[m][1].get(g, missing) for m in metrics]
        body.append("<tr>" + "".join(cells) + "</tr>")
    runs = int(t1["n_runs"].max())
    on = list(dict.fromkeys(t1.loc[t1["backbone"].astype(str) != "", "label"]))
    named = ", ".join(on[:3]) + (", ..." if len(on) > 3 else "")
    feats = f"; {esc(named)} on <code>{esc(', '.join(backbones))}</code> features" if backbones else ""
    return (
        f"<h3>Table 1. Image quality per generator (mean ± sd over {runs} runs{feats}; bold: best)</h3>"
        f'<table class="t1"><thead><tr><th class=text>generator</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _column(rows: pd.DataFrame) -> tuple[str, dict[str, str]]:
    """A Table 1 column: its title (with direction and any x10^k scale) and one cell per generator."""
    first = rows.iloc[0]
    means = rows["mean"].to_numpy(dtype=np.float64)
    top = float(np.nanmax(np.abs(means))) if np.isfinite(means).any() else 1.0
    exp = int(np.ceil(-np.log10(top))) if 0 < top < 0.01 else 0  # tiny values (KID) shown x10^k
    digits = max(2, 2 - int(np.floor(np.log10(top * 10**exp)))) if top > 0 else 2
    low = first["lower_is_better"]
    best = None if low is None or len(rows) < 2 else (np.nanmin(means) if low else np.nanmax(means))
    cells = {}
    for r in rows.itertuples():
        if not np.isfinite(r.mean):
            continue
        text = f"{r.mean * 10**exp:.{digits}f}" + (f" ± {r.sd * 10**exp:.{digits}f}" if np.isfinite(r.sd) else "")
        cells[r.generator] = f'<td class="num nw">{f"<b>{esc(text)}</b>" if r.mean == best else esc(text)}</td>'
    scale = f" ×10{str(exp).translate(_SUPERSCRIPT)}" if exp else ""
    title = f"{first['label']}{scale}{ {True: ' ↓', False: ' ↑'}.get(low, '') }"
    return title, cells


def first_screen(
    significance: pd.DataFrame | None,
    quality: pd.DataFrame | None,
    forest: str | Path | None,
    *,
    baseline: str = "real",
) -> str:
    """The report's opening: one line per arm, the forest plot of the Dice differences, Table 1.

    Args:
        significance: :func:`benchmark.analysis.significance.significance_table` output (Dice and HD95).
        quality: :func:`benchmark.analysis.tables.quality_table` output.
        forest: the forest plot's PNG (:func:`benchmark.analysis.plots.plot_forest`), or None when not drawn.
        baseline: the reference arm's name, as in the significance table.

    Returns:
        The HTML fragment.
    """
    lines = answer_lines(significance)
    if lines.empty:
        parts = [msg("No arm could be compared with the baseline: there are no per-case segmentation rows.")]
    else:
        alpha = float(significance["alpha"].dropna().iloc[0]) if significance["alpha"].notna().any() else 0.05
        parts = [_lines_html(lines, baseline, alpha)]
    if forest is not None and Path(forest).is_file():
        caption = (
            "Dice difference to the baseline, points. Per split: mean with case-bootstrap 95% CI (filled: the "
            "single-split protocol claims a gain). Pooled: diamond with the corrected t 95% CI. Grey band: ± MDE."
        )
        parts.append(img(forest, "forest plot of the Dice difference per split and pooled", caption=caption,
                         cls="forest"))  # fmt: skip
    parts.append(_table1_html(quality))
    return "\n".join(parts)
