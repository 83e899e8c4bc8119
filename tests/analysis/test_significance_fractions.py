"""Significance with a training-data fraction axis: every arm ``<arm>@f<f>`` is paired with ``real@f<f>`` (per split,
seed and test case), ``real@f<f>`` with the full-data ``real``, and Holm's family is the arms of one fraction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark import stats
from benchmark.analysis.headline import answer_lines, first_screen
from benchmark.analysis.robustness import shift_significance
from benchmark.analysis.significance import baseline_of, main_baseline, significance_table

SPLITS, CASES = 4, 8
SIZES = pd.DataFrame({"split": range(SPLITS), "n_train": 20, "n_test": CASES})
JITTER = np.array([0.004, -0.002, 0.001, -0.003])  # per split, so the corrected t-test has a spread


def _rows() -> pd.DataFrame:
    """Per-case Dice on the same test cases for every arm (the fraction changes only the training set):

    ``real`` = b; ``real@f0.5`` = b - 0.05 + jitter; ``real+x@r2@f0.5`` = ``real@f0.5`` exactly and ``real+x@f0.5``
    = ``real@f0.5`` + case noise of zero mean in every split (against full-data ``real`` both would read as -0.05);
    ``real+x`` = b + 0.03 + jitter.
    """
    out = []
    for split in range(SPLITS):
        for case in range(CASES):
            b = 0.80 + 0.01 * ((case * 5 + split) % 7)
            half = b - 0.05 + JITTER[split] + 0.001 * (case - 3.5)
            noise = 0.002 * ((case * 3) % CASES - 3.5)  # a permutation of the cases: zero mean per split
            values = {"real": b, "real@f0.5": half, "real+x@f0.5": half + noise, "real+x@r2@f0.5": half}
            values["real+x"] = b + 0.03 + JITTER[split] + 0.001 * (case - 3.5)
            for arm, value in values.items():
                out.append(dict(study="s", split=split, seed=0, arm=arm, case_id=f"c{split}_{case}", metric="dice",
                                value=value, reason=""))  # fmt: skip
    return pd.DataFrame(out)


def _pooled(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["scope"] == "pooled"].set_index("arm")


def test_baseline_of_keeps_the_fraction_and_drops_the_ratio():
    assert baseline_of("real+x@r2@f0.5") == "real@f0.5"
    assert baseline_of("real@matched@f0.25") == "real@f0.25"
    assert baseline_of("real@f0.5") == "real"  # the fraction's baseline against the full data
    assert baseline_of("real+x@r2") == "real" and baseline_of("real+x") == "real"
    assert baseline_of("real+x@f0.5", "real@f0.5") == "real@f0.5"  # an explicit fraction baseline is kept


def test_fraction_arms_are_paired_with_real_at_the_same_fraction():
    table = significance_table(_rows(), SIZES, n_boot=200)
    pooled = _pooled(table)
    assert set(pooled.index) == {"real@f0.5", "real+x@f0.5", "real+x@r2@f0.5", "real+x"}
    assert pooled.loc["real+x@f0.5", "baseline"] == "real@f0.5"
    assert pooled.loc["real+x@f0.5", "mean_diff"] == pytest.approx(0.0, abs=1e-12)  # not -0.05: real differs
    assert pooled.loc["real+x@f0.5", "verdict"] == "no evidence"
    assert pooled.loc["real+x@f0.5", "n_pairs"] == SPLITS * CASES
    exact = table[(table["scope"] == "split") & (table["arm"] == "real+x@r2@f0.5")]  # equal to real@f0.5 exactly
    assert (exact["baseline"] == "real@f0.5").all() and (exact["mean_diff"] == 0.0).all()
    assert (exact["n_pairs"] == CASES).all() and len(exact) == SPLITS
    assert pooled.loc["real+x", "baseline"] == "real"
    assert pooled.loc["real+x", "mean_diff"] == pytest.approx(0.03 + JITTER.mean())
    assert pooled.loc["real@f0.5", "baseline"] == "real"
    assert pooled.loc["real@f0.5", "mean_diff"] == pytest.approx(-0.05 + JITTER.mean())
    assert pooled.loc["real@f0.5", "verdict"] == "worse"
    assert main_baseline(table) == "real"


def test_holm_family_is_one_fraction_and_n_train_scales_with_it():
    pooled = _pooled(significance_table(_rows(), SIZES, n_boot=200))
    half = pooled.loc[["real@f0.5", "real+x@f0.5", "real+x@r2@f0.5"]]
    np.testing.assert_allclose(half["p_holm"].to_numpy(), stats.holm(half["t_p"].to_numpy()))
    assert "m=2 arm(s) at training-data fraction 0.5" in pooled.loc["real+x@f0.5", "note"]  # r2 untestable: all 0
    assert pooled.loc["real+x", "p_holm"] == pytest.approx(pooled.loc["real+x", "t_p"])  # alone in the 1.0 family
    assert "m=1 arm(s) on" in pooled.loc["real+x", "note"]
    assert pooled.loc["real+x", "test_train_ratio"] == pytest.approx(CASES / 20)
    assert pooled.loc["real@f0.5", "test_train_ratio"] == pytest.approx(CASES / 10)  # trained on half the patients


def test_first_screen_names_a_fraction_arm_baseline():
    table = significance_table(_rows(), SIZES, n_boot=200)
    lines = answer_lines(table).set_index("arm")
    assert lines.loc["real+x@f0.5", "baseline"] == "real@f0.5"
    html = first_screen(table, None, None, baseline=main_baseline(table))
    assert "<b>real+x@f0.5</b> <small>vs real@f0.5</small>" in html
    assert "<b>real+x</b></td>" in html  # the full-data arm keeps the plain name


def test_robustness_pairs_within_a_fraction():
    rows = _rows().assign(shift="noise", severity=1)
    sig = shift_significance(rows, SIZES, min_pairs=5)
    pooled = sig[(sig["scope"] == "pooled") & (sig["metric"] == "dice")].set_index("arm")
    assert pooled.loc["real+x@f0.5", "baseline"] == "real@f0.5"
    assert pooled.loc["real+x@f0.5", "mean_diff"] == pytest.approx(0.0, abs=1e-12)


def test_report_section_and_forest_name_each_baseline(tmp_path):
    from benchmark.analysis.plots import plot_forest
    from benchmark.analysis.report import _significance_section

    table = significance_table(_rows(), SIZES, n_boot=200)
    html = _significance_section(table)
    assert "at its own training-data fraction" in html and "m = dice at 0.5: 2, dice at 1: 1 tested" in html
    assert "<th>baseline</th>" in html.replace(' class="text"', "").replace(" class=text", "")
    assert plot_forest(table, tmp_path / "forest")["png"].is_file()
