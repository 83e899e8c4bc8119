"""Known-answer tests for benchmark.stats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from benchmark import stats

# A fixed paired example (12 cases); x - y in 1e-3: 11 -3 22 18 6 -7 21 4 13 -8 19 15.
X = np.array([0.812, 0.774, 0.853, 0.790, 0.836, 0.801, 0.765, 0.842, 0.829, 0.781, 0.818, 0.796])
Y = np.array([0.801, 0.777, 0.831, 0.772, 0.830, 0.808, 0.744, 0.838, 0.816, 0.789, 0.799, 0.781])


def test_wilcoxon_matches_scipy_on_fixed_example():
    res = stats.wilcoxon_greater(X, Y)
    ref = sps.wilcoxon(X, Y, zero_method="wilcox", alternative="greater", method="exact")
    assert res.method == "exact" and res.zero_method == "wilcox"
    assert res.n_pairs == 12 and res.n_nonzero == 12 and res.reason is None
    # ranks of |d|: 3->1, 4->2, 6->3, 7->4, 8->5, ..., 22->12; negatives hold ranks 1, 4, 5 -> W+ = 78 - 10
    assert res.statistic == 68.0 == float(ref.statistic)
    assert res.p == pytest.approx(float(ref.pvalue), rel=1e-12)


def test_wilcoxon_exact_textbook_value():
    # all 5 differences positive: W+ = 1+2+3+4+5 = 15, the largest of 2^5 equally likely sign patterns -> p = 1/32
    res = stats.wilcoxon_greater([1.1, 2.3, 3.6, 4.0, 5.5], [1.0, 2.1, 3.3, 3.6, 5.0])
    assert res.statistic == 15.0
    assert res.p == pytest.approx(1 / 32)


def test_wilcoxon_ties_use_asymptotic_and_match_scipy():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = x - np.array([0.5, 0.5, -0.5, 1.0, 1.0, 2.0, 0.0, 1.5])  # ties in |d| and one zero
    res = stats.wilcoxon_greater(x, y)
    d = (x - y)[(x - y) != 0]
    ref = sps.wilcoxon(d, zero_method="wilcox", alternative="greater", method="asymptotic", correction=False)
    assert res.method == "asymptotic" and res.n_pairs == 8 and res.n_nonzero == 7
    assert res.p == pytest.approx(float(ref.pvalue))


def test_wilcoxon_too_few_pairs_gives_reason_not_error():
    res = stats.wilcoxon_greater([0.8, 0.7, np.nan, 0.9], [0.7, 0.6, 0.5, np.nan], min_pairs=5)
    assert res.n_pairs == 2 and np.isnan(res.p)
    assert res.reason == "2 paired cases < minimum 5"


def test_wilcoxon_all_zero_differences_is_no_evidence():
    res = stats.wilcoxon_greater([0.5] * 6, [0.5] * 6)
    assert res.p == 1.0 and res.reason == "all paired differences are zero"


def test_corrected_resampled_t_matches_hand_computation():
    # d = [0.02, 0.01, 0.03, 0.015, 0.025], J = 5, n_train = 70, n_test = 30
    # mean(d) = 0.1 / 5 = 0.02
    # var(d, ddof=1) = (0 + 1e-4 + 1e-4 + 2.5e-5 + 2.5e-5) / 4 = 6.25e-5
    # (1/J + n_test/n_train) = 0.2 + 3/7 = 0.6285714...
    # t = 0.02 / sqrt(0.6285714 * 6.25e-5) = 0.02 / 0.0062678317 = 3.190896
    d = [0.02, 0.01, 0.03, 0.015, 0.025]
    res = stats.corrected_resampled_ttest(d, 70, 30, alternative="two-sided")
    hand = 0.02 / np.sqrt((0.2 + 30 / 70) * 6.25e-5)
    assert hand == pytest.approx(3.190896, abs=1e-6)
    assert res.t == pytest.approx(hand, rel=1e-12)
    assert res.df == 4 and res.n_splits == 5
    assert res.test_train_ratio == pytest.approx(30 / 70)
    assert res.p == pytest.approx(2 * sps.t.sf(hand, 4), rel=1e-12)
    greater = stats.corrected_resampled_ttest(d, 70, 30, alternative="greater")
    assert greater.p == pytest.approx(sps.t.sf(hand, 4), rel=1e-12)
    # The uncorrected t (0.02 / sqrt(6.25e-5 / 5) = 5.657) is anti-conservative: the correction shrinks it.
    assert res.t < 0.02 / np.sqrt(6.25e-5 / 5)


def test_corrected_t_reduces_to_one_sample_t_when_test_set_vanishes():
    d = np.array([0.3, -0.1, 0.4, 0.2, 0.05, 0.15])
    res = stats.corrected_resampled_ttest(d, 1e12, 1.0)
    ref = sps.ttest_1samp(d, 0.0)
    assert res.t == pytest.approx(float(ref.statistic), rel=1e-9)
    assert res.p == pytest.approx(float(ref.pvalue), rel=1e-9)


def test_corrected_t_per_split_sizes_use_mean_ratio_and_one_split_gives_reason():
    res = stats.corrected_resampled_ttest([0.1, 0.2, 0.15], [20, 25, 20], [10, 5, 10])
    assert res.test_train_ratio == pytest.approx((0.5 + 0.2 + 0.5) / 3)
    one = stats.corrected_resampled_ttest([0.1], 20, 10)
    assert np.isnan(one.t) and one.reason == "1 splits < minimum 2"


def test_holm_textbook_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_nan_and_is_monotone():
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])
    out = stats.holm([0.02, np.nan, 0.01])  # m = 2: 0.01*2 = 0.02, 0.02*1 -> max 0.02
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    p = np.random.default_rng(3).uniform(0, 0.2, 20)
    adj = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    # 95% nominal, 200 seeded simulated samples of n = 30 from N(0.8, 0.05); percentile intervals run slightly
    # narrow at this n, so the accepted coverage is [0.90, 0.99].
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(200):
        sample = rng.normal(0.8, 0.05, 30)
        ci = stats.bootstrap_ci(sample, n_boot=1000, confidence=0.95, seed=rep)
        hits += ci.low <= 0.8 <= ci.high
    assert 0.90 <= hits / 200 <= 0.99


def test_bootstrap_is_seeded_and_stratified_keeps_group_sizes():
    v = np.r_[np.zeros(10), np.ones(10)]
    a = stats.bootstrap_ci(v, seed=5)
    b = stats.bootstrap_ci(v, seed=5)
    assert (a.low, a.high) == (b.low, b.high)
    # Within-group resampling of constant groups can only ever give the overall mean 0.5.
    s = stats.bootstrap_ci(v, seed=5, strata=[0] * 10 + [1] * 10)
    assert s.low == s.high == 0.5
    assert a.low < 0.5 < a.high


def test_paired_bootstrap_and_too_few_values():
    ci = stats.paired_bootstrap_ci(X, Y, seed=1)
    assert ci.estimate == pytest.approx(np.mean(X - Y))
    assert ci.low < ci.estimate < ci.high and ci.n == 12
    short = stats.bootstrap_ci([0.3, np.nan])
    assert short.n == 1 and np.isnan(short.low) and short.reason == "1 values < minimum 2"


def test_effect_sizes_known_values():
    assert stats.cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    # ranks of |d| = 1, 2, 3; R+ = 1 + 3 = 4, R- = 2 -> (4 - 2) / 6
    assert stats.rank_biserial([1.0, -2.0, 3.0]) == pytest.approx(1 / 3)
    assert stats.rank_biserial([0.0, 0.0]) != stats.rank_biserial([0.0, 0.0])  # NaN
    assert np.isnan(stats.cohens_dz([0.4]))


def test_min_pairs_reason():
    assert stats.min_pairs_reason(5, 5) is None
    assert stats.min_pairs_reason(4, 5, "splits") == "4 splits < minimum 5"


# Student's t quantiles from the tables (checked against scipy below): t_{q, df}
T_975_4, T_95_4, T_80_4 = 2.7764451052, 2.1318467863, 0.9409645772


def test_t_table_constants():
    assert sps.t.ppf([0.975, 0.95, 0.8], 4) == pytest.approx([T_975_4, T_95_4, T_80_4], abs=1e-9)


def test_min_detectable_effect_matches_hand_computation():
    # same splits as the corrected t above: SE = sqrt((1/5 + 30/70) * 6.25e-5) = 0.0062678317
    d = [0.02, 0.01, 0.03, 0.015, 0.025]
    se = np.sqrt((0.2 + 30 / 70) * 6.25e-5)
    assert se == pytest.approx(0.0062678317, abs=1e-10)
    # two-sided at 0.05, 80% power: (t_{0.975,4} + t_{0.8,4}) * SE = 3.7174096824 * 0.0062678317 = 0.0233001...
    two = stats.min_detectable_effect(d, 70, 30, alpha=0.05, power=0.8)
    assert two == pytest.approx((T_975_4 + T_80_4) * se, rel=1e-9)
    assert two == pytest.approx(0.02330009, abs=1e-8)
    # one-sided: (t_{0.95,4} + t_{0.8,4}) * SE = 3.0728113635 * 0.0062678317
    one = stats.min_detectable_effect(d, 70, 30, alpha=0.05, power=0.8, alternative="greater")
    assert one == pytest.approx((T_95_4 + T_80_4) * se, rel=1e-9)
    # a stricter level (alpha / 4, as Holm over four arms guarantees) needs a larger effect
    assert stats.min_detectable_effect(d, 70, 30, alpha=0.0125) > two > one


def test_min_detectable_effect_edge_cases():
    assert np.isnan(stats.min_detectable_effect([0.01], 70, 30))  # one split: no variance across splits
    assert stats.min_detectable_effect([0.01, 0.01, np.nan], 70, 30) == 0.0  # identical splits
    with pytest.raises(ValueError, match="alpha and power"):
        stats.min_detectable_effect([0.01, 0.02], 70, 30, power=1.0)


def test_lucky_split_count_counts_strictly_below_alpha():
    # p < 0.05 on splits 1 and 3 only (0.05 itself is not a claim); the NaN split was not tested
    assert stats.lucky_split_count([0.2, 0.01, 0.05, 0.049, np.nan]) == (2, 4)
    assert stats.lucky_split_count([0.2, 0.01, 0.05, 0.049], alpha=0.1) == (3, 4)
    assert stats.lucky_split_count([]) == (0, 0)
