"""The report's training-budget section: how the arms were matched (``segmentation.budget``) and, per arm, its
training volumes and optimizer steps, so that a gain from data can be told from a gain from compute."""

from __future__ import annotations

import pandas as pd

from benchmark.analysis.html_parts import esc, msg, table_html

COUNTS = ("n_real", "n_real_extra", "n_synthetic", "n_augmented")

_RULES = {
    "epochs": (
        "Arms are matched in epochs (<code>segmentation.budget: epochs</code>, <code>epochs: {epochs}</code>): an "
        "arm with more training volumes takes more optimizer steps, as in the paper. <code>real@matched</code>, when "
        "present, trains the real cases alone for the steps of the largest arm of its split, seed, ratio and "
        "training-data fraction: "
        "<code>real+&lt;generator&gt;</code> against it is the gain from the data at equal compute, and it against "
        "<code>real</code> the gain from the extra steps alone."
    ),
    "steps": (
        "Arms are matched in optimizer steps (<code>segmentation.budget: steps</code>, equal compute): every arm of "
        "a split trains the same number of steps, so a difference between arms comes from their data."
    ),
}


def budget_table(arms: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: its training volumes and optimizer steps (the range over splits and seeds when they differ).

    Args:
        arms: the studies' ``arm.json`` records (``StudyFrames.arms``); missing columns (older records) show as n/a.

    Returns:
        Columns ``arm``, the counts of :data:`COUNTS`, ``volumes``, ``steps``, ``budget``; with a training-data
        fraction other than 1 in the records (``segmentation.fractions``), ``fraction`` after ``arm``.
    """
    rows = []
    fractions = pd.to_numeric(arms["fraction"], errors="coerce").fillna(1.0) if "fraction" in arms else None
    for arm, group in arms.groupby("arm", sort=False):
        row: dict = {"arm": arm}
        if fractions is not None:
            row["fraction"] = ", ".join(f"{f:g}" for f in sorted(fractions[group.index].unique()))
        for col in COUNTS:
            row[col] = _span(group[col]) if col in group else "n/a"
        total = group[[c for c in COUNTS if c in group]].fillna(0).sum(axis=1)
        row["volumes"] = _span(total)
        row["steps"] = _span(group["steps"]) if "steps" in group else "n/a"
        row["budget"] = ", ".join(sorted(group["budget"].dropna().astype(str).unique())) if "budget" in group else "n/a"
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["arm"] != "real", rows[i]["arm"]))
    several = fractions is not None and bool((fractions != 1.0).any())
    columns = ["arm", *(["fraction"] if several else []), *COUNTS, "volumes", "steps", "budget"]
    return pd.DataFrame([rows[i] for i in order], columns=columns)


def budget_section(arms: pd.DataFrame) -> str:
    """The section's HTML: the budget rule in words, then :func:`budget_table`.

    Args:
        arms: the ``arm.json`` records; empty gives a message.
    """
    if arms.empty:
        return msg("No arm records: the training budget per arm is unknown.")
    budgets = sorted(arms["budget"].dropna().astype(str).unique()) if "budget" in arms else []
    epochs = _epochs(arms)
    text = [_RULES[b].format(epochs=epochs) for b in budgets if b in _RULES]
    if not text:
        text = [f"Training budget not recorded ({esc(', '.join(budgets) or 'no budget field in arm.json')})."]
    return "".join(f"<p>{t}</p>" for t in text) + table_html(budget_table(arms))


def _epochs(arms: pd.DataFrame) -> str:
    if "segmentation" not in arms:
        return "n/a"
    values = {str(s.get("epochs")) for s in arms["segmentation"] if isinstance(s, dict)}
    return esc(", ".join(sorted(values)) or "n/a")


def _span(values: pd.Series) -> str:
    """``12`` when every value is 12, ``10-14`` for a range; integers as written in ``arm.json``."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n/a"
    lo, hi = int(v.min()), int(v.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"
