"""C2ST: a classifier two-sample test of real against synthetic volumes (domain-adversarial realism).

A classifier learns to tell real volumes from synthetic ones; its held-out AUC and accuracy measure how
distinguishable the two sets are: 0.5 means indistinguishable (the classifier does no better than chance), 1.0
means every volume is told apart.

The classifier is a linear probe: standardised backbone features (the same cached features FID, KID and MMD use,
so it costs no extra network pass) into an L2-regularised logistic regression (``C = 1``, class-balanced
weights, solved in the dual by liblinear with a fixed coordinate order), scored out of fold with stratified k-fold
cross-validation (k = 5, fewer when a set is smaller). A small 3D CNN trained per job would learn its own features
but needs a training schedule per study and minutes per call on a CPU, and its result would depend on that
schedule; the probe fits in milliseconds (one variable per sample in the dual: N << F) and has no
hyper-parameter tuned on the data, so a permutation test of hundreds of refits stays cheap. Its power is bounded
by the features: a difference the backbone does not see, the probe cannot see either, so a C2ST of 0.5 says the
sets agree in this feature space only.

Reported entries (``backbone``: the feature extractor's name):

* ``c2st_auc``: the AUC of the pooled out-of-fold probabilities.
* ``c2st_accuracy``: balanced accuracy of those probabilities at 0.5 (mean of the per-class recalls), so that
  0.5 is chance whatever the two set sizes.

CIs are percentile bootstrap intervals over the out-of-fold predictions (real and synthetic cases resampled
separately, ``metrics.bootstrap`` times); they hold the fitted folds fixed. The p-values come from a label
permutation test: the real/synthetic labels are shuffled and the whole cross-validation refitted
``metrics.c2st_permutations`` times, ``p = (1 + #{permuted >= observed}) / (1 + permutations)``. Per-case rows
``c2st_prob_synthetic`` hold each synthetic volume's out-of-fold probability of being called synthetic (high:
easy to spot). Every draw (fold assignment, bootstrap, permutations) comes from ``metrics.seed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmark.errors import DataError
from benchmark.metrics.context import MetricOutput, entry
from benchmark.metrics.distribution import check_features

if TYPE_CHECKING:
    from benchmark.metrics.context import EvalContext

FOLDS = 5
MAX_ITER = 1000


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: StratifiedKFold) -> np.ndarray:
    """Out-of-fold probabilities of class 1 from a standardised, class-balanced logistic regression.

    Args:
        x: (N, F) features.
        y: (N,) 0/1 labels.
        folds: the splitter (seeded by the caller).

    Returns:
        (N,) probabilities, each from the model that did not see that sample.
    """
    prob = np.empty(len(y))
    for train, test in folds.split(x, y):
        # the dual problem has one variable per sample: with N << F it is solved in milliseconds
        probe = LogisticRegression(
            C=1.0, class_weight="balanced", solver="liblinear", dual=True, max_iter=MAX_ITER, random_state=0
        )
        model = make_pipeline(StandardScaler(), probe)
        model.fit(x[train], y[train])
        prob[test] = model.predict_proba(x[test])[:, 1]
    return prob


def balanced_accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean per-class recall of ``prob > 0.5`` (0.5 = chance for any class sizes).

    Args:
        y: (N,) 0/1 labels, both classes present.
        prob: (N,) probabilities of class 1.

    Returns:
        The balanced accuracy in [0, 1].
    """
    pred = prob > 0.5
    return float(0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean()))


def auc_score(y: np.ndarray, prob: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half).

    Args:
        y: (N,) 0/1 labels, both classes present.
        prob: (N,) scores of class 1.

    Returns:
        P(score of a random positive > score of a random negative) + 0.5 P(tie).
    """
    ranks = rankdata(prob)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scores(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    return auc_score(y, prob), balanced_accuracy(y, prob)


def _bootstrap(
    y: np.ndarray, prob: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[tuple[float | None, float | None], tuple[float | None, float | None]]:
    """Percentile intervals of (AUC, balanced accuracy), each class resampled on its own."""
    if n_boot == 0:
        return (None, None), (None, None)
    neg, pos = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(neg, len(neg)), rng.choice(pos, len(pos))])
        vals.append(_scores(y[idx], prob[idx]))
    q = np.quantile(np.asarray(vals), [0.025, 0.975], axis=0)
    return (float(q[0, 0]), float(q[1, 0])), (float(q[0, 1]), float(q[1, 1]))


def c2st(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    rng: np.random.Generator,
    permutations: int = 100,
    n_boot: int = 200,
    folds: int = FOLDS,
) -> dict:
    """Classifier two-sample test (real = 0, synthetic = 1) with a linear probe.

    Args:
        real: (N, F) real features, N >= 2.
        synthetic: (M, F) synthetic features, M >= 2.
        rng: the random generator (fold assignment, bootstrap and permutations draw from it in that order).
        permutations: label permutations for the p-values; 0 leaves them None.
        n_boot: bootstrap resamples of the out-of-fold predictions; 0 leaves the intervals None.
        folds: cross-validation folds (capped at the smaller set size).

    Returns:
        ``auc``, ``accuracy`` (balanced), ``auc_ci``, ``accuracy_ci``, ``p_auc``, ``p_accuracy``, ``prob``
        (out-of-fold probabilities of being synthetic, real rows first) and ``folds``.
    """
    x, s = check_features(real, synthetic, "C2ST features")
    k = min(folds, len(x), len(s))
    feats = np.concatenate([x, s])
    y = np.concatenate([np.zeros(len(x), dtype=np.int64), np.ones(len(s), dtype=np.int64)])
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    prob = out_of_fold(feats, y, splitter)
    auc, acc = _scores(y, prob)
    auc_ci, acc_ci = _bootstrap(y, prob, n_boot, rng)
    p_auc = p_acc = None
    if permutations:
        null = np.array([_scores(yp, out_of_fold(feats, yp, splitter)) for yp in _permuted(y, permutations, rng)])
        p_auc = float((1 + np.sum(null[:, 0] >= auc)) / (1 + permutations))
        p_acc = float((1 + np.sum(null[:, 1] >= acc)) / (1 + permutations))
    return {
        "auc": auc,
        "accuracy": acc,
        "auc_ci": auc_ci,
        "accuracy_ci": acc_ci,
        "p_auc": p_auc,
        "p_accuracy": p_acc,
        "prob": prob,
        "folds": k,
    }


def _permuted(y: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(y) for _ in range(n)]


def c2st_metric(ctx: EvalContext) -> MetricOutput:
    """C2ST AUC and balanced accuracy with bootstrap CIs and permutation p-values, plus per-case probabilities."""
    real_ids, x = ctx.real_features
    syn_ids, s = ctx.synthetic_features
    if len(real_ids) < 2 or len(syn_ids) < 2:
        raise DataError(
            "C2ST", f"needs at least 2 real and 2 synthetic volumes, got {len(real_ids)} and {len(syn_ids)}"
        )
    cfg = ctx.cfg
    res = c2st(x, s, rng=ctx.rng("c2st"), permutations=cfg.c2st_permutations, n_boot=cfg.bootstrap)
    common = {
        "n": min(len(x), len(s)),
        "backbone": ctx.backbone,
        "n_real": len(x),
        "n_synthetic": len(s),
        "folds": res["folds"],
        "permutations": cfg.c2st_permutations,
        "classifier": "logistic_regression",
    }
    summary = {
        "c2st_auc": entry(res["auc"], res["auc_ci"], p_value=res["p_auc"], **common),
        "c2st_accuracy": entry(res["accuracy"], res["accuracy_ci"], p_value=res["p_accuracy"], **common),
    }
    rows = [
        {"case_id": cid, "metric": "c2st_prob_synthetic", "value": float(p), "backbone": ctx.backbone}
        for cid, p in zip(syn_ids, res["prob"][len(x) :], strict=True)
    ]
    return MetricOutput(rows=rows, summary=summary)
