"""Small HTML pieces the study report is built from: inline CSS, escaping, messages, tables and embedded images.

Everything is inline (styles in one ``<style>`` block, images as base64 data URIs), so a report is one file that
opens offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.analysis.tables import format_frame

__all__ = ["CSS", "esc", "img", "msg", "num", "table_html"]

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.2rem auto;max-width:1320px;
color:#1d2329;line-height:1.45;padding:0 1rem}
h1{font-size:1.45rem;margin:0 0 .2rem;border-bottom:2px solid #2b6cb0;padding-bottom:.2rem}
h2{font-size:1.25rem;margin-top:2.2rem;color:#2b4a6f}
h3{font-size:1rem;margin:.9rem 0 .3rem;color:#2b4a6f}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.85rem}
th,td{border:1px solid #cfd6de;padding:.25rem .55rem;text-align:right}
th{background:#edf2f7;position:sticky;top:0}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#f8fafc}
.msg{border-left:4px solid #d69e2e;background:#fffbea;padding:.5rem .8rem;margin:.5rem 0}
.leaky{border-left:4px solid #c53030;background:#fff5f5;padding:.6rem .9rem;margin:.8rem 0;font-weight:600}
.ok{border-left:4px solid #2f855a;background:#f0fff4;padding:.5rem .8rem;margin:.5rem 0}
.improves{color:#22753f;font-weight:600}.worse{color:#b83232;font-weight:600}.noevidence{color:#555;font-weight:600}
.nottested{color:#975a16}
td.improves,td.worse,td.noevidence{white-space:nowrap}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dl.prov dt{font-weight:600}
dl.prov dd{margin:0;font-family:monospace}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e2e8f0}
figcaption{font-size:.85rem;color:#4a5568}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.7rem;overflow:auto;font-size:.8rem;max-height:30rem}
.sub{color:#4a5568;font-size:.85rem;margin:0 0 .5rem}
.answer{font-size:1.05rem;margin:.5rem 0 .3rem}
table.lines,table.t1{margin:.3rem 0 .5rem;font-size:.86rem}
table.lines td,table.lines th,table.t1 td,table.t1 th{padding:.2rem .5rem}
table.lines th,table.t1 th{position:static}
td.lucky{background:#fdf0c4 !important}.nw{white-space:nowrap}.tw{overflow-x:auto}
.small{color:#4a5568;font-size:.78rem;margin:.1rem 0 .4rem}
figure.forest{margin:.3rem 0}figure.forest img{border:none}
"""


def esc(value: Any) -> str:
    """Text escaped for HTML content and attribute values.

    Args:
        value: anything; ``str()`` is taken first.

    Returns:
        The escaped text.
    """
    return html.escape(str(value), quote=True)


def num(value: Any) -> str:
    """A number to 4 significant digits, NaN as "-".

    Args:
        value: a number.

    Returns:
        The text.
    """
    v = float(value)
    return "-" if v != v else f"{v:.4g}"


def msg(text: str, cls: str = "msg") -> str:
    """A highlighted message block (a gap in the data, a warning).

    Args:
        text: the message (escaped here).
        cls: the CSS class: "msg" (amber), "leaky" (red) or "ok" (green).

    Returns:
        The ``<div>``.
    """
    return f'<div class="{cls}">{esc(text)}</div>'


def table_html(frame: pd.DataFrame, digits: int = 3) -> str:
    """An HTML table; text columns left-aligned, verdicts coloured.

    Args:
        frame: the table (its index is not shown).
        digits: decimals for floats (see :func:`benchmark.analysis.tables.format_frame`).

    Returns:
        The ``<table>``.
    """
    text = format_frame(frame, digits)
    is_text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    head = "".join(
        f'<th class="{"text" if t else "num"}">{esc(c)}</th>' for c, t in zip(frame.columns, is_text, strict=True)
    )
    body = []
    for row in text.itertuples(index=False):
        cells = []
        for col, val, t in zip(frame.columns, row, is_text, strict=True):
            cls = "text" if t else "num"
            if col == "verdict" and val in ("improves", "worse", "no evidence"):
                cls += " " + val.replace(" ", "")
            cells.append(f'<td class="{cls}">{esc(val)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    # a wide table scrolls in its own box instead of running off the page (narrow ones keep their sticky header)
    return f'<div class="tw">{table}</div>' if len(frame.columns) > 12 else table


def img(path: str | Path, alt: str, *, caption: str | None = None, cls: str = "") -> str:
    """A PNG embedded as a base64 data URI inside a ``<figure>``.

    Args:
        path: the PNG file (read here).
        alt: the image's alternative text.
        caption: optional caption (escaped).
        cls: optional CSS class of the figure.

    Returns:
        The ``<figure>``.
    """
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    klass = f' class="{cls}"' if cls else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure{klass}><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'
