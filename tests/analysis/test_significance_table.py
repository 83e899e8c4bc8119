"""significance_table on constructed frames with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark import stats
from benchmark.analysis.significance import COLUMNS, significance_table
from benchmark.errors import DataError


def _pooled(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["scope"] == "pooled"].set_index("arm")


def test_better_equal_worse_verdicts(three_arms, sizes):
    table = significance_table(three_arms, sizes, alpha=0.05)
    assert list(table.columns) == COLUMNS
    pooled = _pooled(table)
    assert pooled.loc["real+good", "verdict"] == "improves"
    assert pooled.loc["real+same", "verdict"] == "no evidence"
    assert pooled.loc["real+bad", "verdict"] == "worse"
    assert pooled.loc["real+good", "mean_diff"] == pytest.approx(0.05)
    assert pooled.loc["real+same", "t_stat"] == pytest.approx(0.0, abs=1e-9)
    # Holm across the three arms, stated and computed explicitly
    np.testing.assert_allclose(pooled["p_holm"].to_numpy(), stats.holm(pooled["t_p"].to_numpy()))
    assert "Holm step-down over m=3" in pooled.loc["real+good", "note"]
    np.testing.assert_allclose(pooled["test_train_ratio"], 12 / 28)
    assert (pooled["n_splits"] == 5).all() and (pooled["n_pairs"] == 50).all()


def test_pooled_t_matches_formula_on_split_means(three_arms, sizes):
    table = significance_table(three_arms, sizes)
    row = _pooled(table).loc["real+good"]
    d = 0.05 + np.array([0.004, -0.002, 0.0, 0.002, -0.004])  # per-split mean differences by construction
    t = d.mean() / np.sqrt((1 / 5 + 12 / 28) * d.var(ddof=1))
    assert row["t_stat"] == pytest.approx(t, rel=1e-6)
    assert row["df"] == 4
    assert row["ci_low"] < 0.05 < row["ci_high"]


def test_per_split_wilcoxon_rows_report_pairs(three_arms, sizes):
    table = significance_table(three_arms, sizes)
    split_rows = table[(table["scope"] == "split") & (table["arm"] == "real+good")]
    assert list(split_rows["split"]) == ["0", "1", "2", "3", "4"]
    assert (split_rows["n_pairs"] == 10).all()
    # every difference positive: W+ = 55 = 1 + ... + 10, exact p = 1 / 2^10
    assert (split_rows["wilcoxon_stat"] == 55).all()
    np.testing.assert_allclose(split_rows["wilcoxon_p"], 1 / 1024)
    assert split_rows["wilcoxon_method"].str.startswith("exact").all()


def test_seeds_are_averaged_per_case_and_pairs_match_on_seed(make_rows, sizes):
    rows = make_rows({"real+good": 0.05}, seeds=(0, 1))
    # drop one case's seed-1 arm row: that case still pairs through seed 0
    drop = (rows["arm"] == "real+good") & (rows["case_id"] == "c0_0") & (rows["seed"] == 1)
    table = significance_table(rows[~drop], sizes)
    assert table[(table["scope"] == "split") & (table["split"] == "0")]["n_pairs"].iloc[0] == 10
    # an empty study column (as read back from a CSV) must not drop the rows from the pairing
    blank = significance_table(rows.assign(study=np.nan), sizes)
    assert blank.loc[blank["scope"] == "pooled", "n_pairs"].iloc[0] == 50


def test_lower_is_better_for_hd95(make_rows, sizes):
    rows = make_rows({"real+good": -2.0, "real+bad": 2.0}, metric="hd95")
    pooled = _pooled(significance_table(rows, sizes, metric="hd95"))
    assert pooled.loc["real+good", "verdict"] == "improves"
    assert pooled.loc["real+bad", "verdict"] == "worse"
    assert pooled.loc["real+good", "mean_diff"] < 0 < pooled.loc["real+good", "effect_dz"]


def test_split_with_too_few_pairs_is_reported_and_left_out(make_rows, sizes):
    rows = make_rows({"real+good": 0.05})
    short = (rows["split"] == 4) & ~rows["case_id"].isin(["c4_0", "c4_1", "c4_2"])
    table = significance_table(rows[~short], sizes, min_pairs=5)
    split4 = table[(table["scope"] == "split") & (table["split"] == "4")].iloc[0]
    assert split4["n_pairs"] == 3 and np.isnan(split4["wilcoxon_p"])
    assert "3 paired cases < minimum 5" in split4["reason"]
    pooled = _pooled(table).loc["real+good"]
    assert pooled["n_splits"] == 4 and pooled["verdict"] == "improves"
    assert "split(s) 4 have < 5 pairs" in pooled["note"]


def test_arm_with_no_usable_split_is_not_tested_with_reason(make_rows, sizes):
    rows = make_rows({"real+good": 0.05}, n_cases=3)
    pooled = _pooled(significance_table(rows, sizes, min_pairs=5)).loc["real+good"]
    assert pooled["verdict"] == "not tested"
    assert pooled["reason"] == "no split has enough paired cases"


def test_only_one_split_gives_t_test_reason(make_rows, sizes):
    rows = make_rows({"real+good": 0.05}, n_splits=1)
    pooled = _pooled(significance_table(rows, sizes)).loc["real+good"]
    assert pooled["verdict"] == "not tested"
    assert "needs >= 2 splits" in pooled["reason"]


def test_missing_arm_baseline_sizes_and_empty_input(three_arms, sizes):
    table = significance_table(three_arms, sizes, arms=["real+spade_ldm"])
    missing = _pooled(table).loc["real+spade_ldm"]
    assert missing["verdict"] == "not tested" and "no per-case 'dice' rows" in missing["reason"]
    # the missing arm is not part of the Holm family
    assert "m=3" in _pooled(table).loc["real+good", "note"]

    no_base = significance_table(three_arms[three_arms["arm"] != "real"], sizes)
    assert (no_base["reason"] == "baseline 'real' has no per-case 'dice' rows").all()

    no_sizes = _pooled(significance_table(three_arms, {0: (28, 12)})).loc["real+good"]
    assert "no train/test sizes for split(s)" in no_sizes["reason"] and no_sizes["verdict"] == "not tested"

    for empty in (None, pd.DataFrame()):
        out = significance_table(empty, sizes)
        assert len(out) == 1 and out["verdict"].iloc[0] == "not tested"
        assert "no per-case 'dice' rows" in out["reason"].iloc[0]


def test_nan_values_are_counted_not_paired(three_arms, sizes):
    rows = three_arms.copy()
    hit = (rows["arm"] == "real+bad") & rows["case_id"].isin(["c0_0", "c1_1"])
    rows.loc[hit, "value"] = np.nan
    rows.loc[hit, "reason"] = "empty prediction"
    pooled = _pooled(significance_table(rows, sizes)).loc["real+bad"]
    assert pooled["n_pairs"] == 48
    assert "2 row(s) with NaN value left unpaired: empty prediction (2)" in pooled["note"]


def test_split_sizes_as_frame_and_missing_column_error(three_arms):
    frame = pd.DataFrame({"split": range(5), "n_train": 30, "n_test": 10})
    pooled = _pooled(significance_table(three_arms, frame))
    np.testing.assert_allclose(pooled["test_train_ratio"], 1 / 3)
    with pytest.raises(DataError, match="seg_rows: missing columns"):
        significance_table(three_arms.drop(columns=["case_id"]), frame)


# Per-case differences (arm - real) of one arm on four splits of six test cases, no ties in |d| within a split.
SPLIT_DIFFS = {
    0: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],  # all positive: W+ = 21, exact p = 1/64 -> claim
    1: [-0.005, 0.01, 0.015, 0.02, 0.025, 0.055],  # rank 1 negative: W+ = 20, p = 2/64 -> claim
    2: [-0.01, -0.02, 0.03, 0.04, 0.05, 0.06],  # ranks 1, 2 negative: W+ = 18, p = 5/64 -> no claim
    3: [-0.01, -0.02, -0.03, -0.04, -0.06, 0.07],  # only rank 6 positive: W+ = 6 -> no claim
}


def _fixed_table(metric: str = "dice", sign: float = 1.0) -> pd.DataFrame:
    rows = []
    for split, diffs in SPLIT_DIFFS.items():
        for case, diff in enumerate(diffs):
            base = 0.60 + 0.01 * case if metric == "dice" else 5.0 + case
            for arm, value in (("real", base), ("real+x", base + sign * diff)):
                rows.append(dict(split=split, seed=0, arm=arm, case_id=f"s{split}c{case}", metric=metric, value=value))
    return pd.DataFrame(rows)


def test_mde_lucky_splits_and_t_interval_by_hand():
    row = _pooled(significance_table(_fixed_table(), {s: (24, 6) for s in SPLIT_DIFFS})).loc["real+x"]
    # split means 0.21/6 = 0.035, 0.12/6 = 0.02, 0.15/6 = 0.025, -0.09/6 = -0.015; mean 0.065/4 = 0.01625
    # squared deviations 3.515625e-4 + 1.40625e-5 + 7.65625e-5 + 9.765625e-4 = 1.41875e-3; var = 4.7291667e-4
    # SE = sqrt((1/4 + 6/24) * 4.7291667e-4) = sqrt(2.3645833e-4) = 0.015377202
    se = np.sqrt(0.5 * 1.41875e-3 / 3)
    assert se == pytest.approx(0.015377202, abs=1e-9)
    assert row["mean_diff"] == pytest.approx(0.01625) and row["t_se"] == pytest.approx(se)
    # one arm: Holm keeps alpha = 0.05; two-sided, 80% power, df = 3:
    # MDE = (t_{0.975,3} + t_{0.8,3}) * SE = (3.1824463053 + 0.9784723124) * 0.015377202 = 0.0639832...
    assert row["mde_alpha"] == 0.05
    assert row["mde"] == pytest.approx((3.1824463053 + 0.9784723124) * se, rel=1e-8)
    assert row["t_ci_low"] == pytest.approx(0.01625 - 3.1824463053 * se, rel=1e-8)
    assert row["t_ci_high"] == pytest.approx(0.01625 + 3.1824463053 * se, rel=1e-8)
    assert row["lucky_splits"] == 2 and row["n_splits"] == 4  # splits 0 and 1 (p = 1/64, 2/64)
    assert row["verdict"] == "no evidence"  # t = 0.01625 / 0.015377 = 1.057, df 3


def test_hd95_mde_and_lucky_splits_follow_lower_is_better():
    # the same differences as HD95 reductions (arm lower = better): identical counts and MDE in mm units
    rows = _fixed_table("hd95", sign=-1.0)
    row = _pooled(significance_table(rows, {s: (24, 6) for s in SPLIT_DIFFS}, metric="hd95")).loc["real+x"]
    assert row["lucky_splits"] == 2
    assert row["mde"] == pytest.approx((3.1824463053 + 0.9784723124) * np.sqrt(0.5 * 1.41875e-3 / 3), rel=1e-8)
    assert row["mean_diff"] == pytest.approx(-0.01625)


def test_mde_level_is_alpha_over_holm_family_and_clear_effects_have_direction(three_arms, sizes):
    pooled = _pooled(significance_table(three_arms, sizes, alpha=0.05))
    np.testing.assert_allclose(pooled["mde_alpha"], 0.05 / 3)
    # the constructed split jitter is the same for every arm: one MDE for all three
    d = np.array([0.004, -0.002, 0.0, 0.002, -0.004])
    se = np.sqrt((1 / 5 + 12 / 28) * d.var(ddof=1))
    np.testing.assert_allclose(pooled["mde"], (sps.t.ppf(1 - 0.05 / 6, 4) + sps.t.ppf(0.8, 4)) * se, rtol=1e-6)
    assert pooled.loc["real+good", "verdict"] == "improves" and pooled.loc["real+good", "lucky_splits"] == 5
    assert pooled.loc["real+bad", "verdict"] == "worse" and pooled.loc["real+bad", "lucky_splits"] == 0
