"""C2ST: chance for one distribution, near 1 for two, exact AUC, balanced accuracy, seeded results."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmark.config import MetricsConfig
from benchmark.errors import ConfigError, DataError
from benchmark.metrics import METRICS
from benchmark.metrics.c2st import auc_score, balanced_accuracy, c2st, c2st_metric
from benchmark.metrics.context import EvalContext

N, F = 29, 512  # the default study's set sizes and the ResNet's feature dimension
CFG = MetricsConfig(backbone="resnet10", bootstrap=50, c2st_permutations=30)


def _gauss(seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, F)), rng.standard_normal((N, F)) + shift


def test_auc_is_the_mann_whitney_statistic_with_ties():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    prob = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.2, 0.9])
    # pairs (pos, neg): 0.4 beats 0.1, ties 0.4 twice; 0.8 and 0.9 beat all; 0.2 beats 0.1 only
    expected = (1 + 0.5 * 2 + 3 + 3 + 1) / 12
    assert auc_score(y, prob) == pytest.approx(expected)
    assert auc_score(y, prob) == pytest.approx(roc_auc_score(y, prob))


def test_balanced_accuracy_is_chance_for_a_constant_guess_whatever_the_set_sizes():
    y = np.array([0, 0, 0, 1])
    assert balanced_accuracy(y, np.full(4, 0.9)) == 0.5  # plain accuracy would be 0.25
    assert balanced_accuracy(y, np.array([0.2, 0.7, 0.1, 0.8])) == pytest.approx(0.5 * (1.0 + 2 / 3))


def test_one_distribution_is_indistinguishable():
    x, y = _gauss(0)
    res = c2st(x, y, rng=np.random.default_rng(0), permutations=50, n_boot=100)
    assert abs(res["auc"] - 0.5) <= 0.15 and abs(res["accuracy"] - 0.5) <= 0.15
    assert res["p_auc"] > 0.05 and res["p_accuracy"] > 0.05
    assert res["auc_ci"][0] < 0.5 < res["auc_ci"][1]
    assert res["folds"] == 5 and res["prob"].shape == (2 * N,)


def test_two_distributions_are_told_apart():
    x, y = _gauss(1, shift=0.5)
    res = c2st(x, y, rng=np.random.default_rng(0), permutations=50, n_boot=100)
    assert res["auc"] > 0.95 and res["accuracy"] > 0.9
    assert res["p_auc"] == pytest.approx(1 / 51)  # no permutation reached the observed AUC
    assert res["auc_ci"][0] > 0.8
    assert res["prob"][N:].mean() > 0.8 > 0.2 > res["prob"][:N].mean()


def test_seeded_and_switchable():
    x, y = _gauss(2, shift=0.1)
    a = c2st(x, y, rng=np.random.default_rng(3), permutations=10, n_boot=20)
    b = c2st(x, y, rng=np.random.default_rng(3), permutations=10, n_boot=20)
    np.testing.assert_array_equal(a["prob"], b["prob"])
    assert (a["auc"], a["auc_ci"], a["p_auc"]) == (b["auc"], b["auc_ci"], b["p_auc"])
    c = c2st(x, y, rng=np.random.default_rng(4), permutations=10, n_boot=20)
    assert c["auc_ci"] != a["auc_ci"]  # another seed: other folds and resamples
    off = c2st(x, y, rng=np.random.default_rng(3), permutations=0, n_boot=0)
    assert off["p_auc"] is None and off["auc_ci"] == (None, None)
    small = c2st(x[:3], y[:4], rng=np.random.default_rng(0), permutations=0, n_boot=0)
    assert small["folds"] == 3  # capped by the smaller set
    with pytest.raises(DataError, match="at least 2 samples"):
        c2st(x[:1], y, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="c2st_permutations"):
        MetricsConfig(c2st_permutations=-1)


def _volumes(seed: int, n: int, power: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i:02d}": (rng.random((16, 16, 8), dtype=np.float32) ** power) for i in range(n)}


def _ctx(real, syn, tmp_path) -> EvalContext:
    return EvalContext(real=real, synthetic=syn, labels={}, train_real={}, cfg=CFG, cache_dir=tmp_path / "cache")


def test_metric_on_volumes_registered_seeded_with_per_case_rows(tmp_path):
    assert METRICS["c2st"] is c2st_metric
    real, syn = _volumes(0, 12, 1.0), _volumes(1, 10, 3.0)  # a strong gamma change: easy to tell apart
    first = c2st_metric(_ctx(real, syn, tmp_path))
    again = c2st_metric(_ctx(real, syn, tmp_path))  # the features now come from the cache
    assert first.summary == again.summary and first.rows == again.rows
    auc = first.summary["c2st_auc"]
    assert auc["value"] > 0.95 and auc["p_value"] == pytest.approx(1 / 31)
    assert auc["backbone"] == "random_resnet10_seed0" and auc["n"] == 10
    assert (auc["n_real"], auc["n_synthetic"], auc["folds"], auc["permutations"]) == (12, 10, 5, 30)
    assert first.summary["c2st_accuracy"]["value"] > 0.9
    assert [r["case_id"] for r in first.rows] == sorted(syn)
    assert {r["metric"] for r in first.rows} == {"c2st_prob_synthetic"}
    assert min(r["value"] for r in first.rows) > 0.5
    same = c2st_metric(_ctx(_volumes(2, 12, 1.0), _volumes(3, 12, 1.0), tmp_path)).summary["c2st_auc"]
    assert abs(same["value"] - 0.5) <= 0.15 and same["p_value"] > 0.05
