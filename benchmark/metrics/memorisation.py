"""Memorisation: is a synthetic volume closer to one training volume than real volumes are to each other?

For every synthetic volume the distance to its nearest real training volume is measured in feature space
(L2 between backbone features) and in voxel space (L2 between per-volume z-scored voxels divided by sqrt(number
of voxels), i.e. the RMS difference of the standardised volumes). The reference is the leave-one-out
nearest-neighbour distance of every training volume to the other training volumes; a synthetic volume counts
as memorised when it is closer than the ``metrics.memorisation_percentile`` (default 5th) percentile of those
real-to-real distances. Several scans of one patient in the training set make real-to-real distances small and
the test conservative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics.context import MetricOutput, entry
from benchmark.metrics.features import check_volume

if TYPE_CHECKING:
    from benchmark.metrics.context import EvalContext


def voxel_vectors(volumes: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Sorted ids and (N, V) float64 rows: each volume z-scored, then scaled by 1/sqrt(V)."""
    ids = sorted(volumes)
    rows, shape = [], None
    for cid in ids:
        v = check_volume(volumes[cid], cid).astype(np.float64).ravel()
        if shape is not None and volumes[cid].shape != shape:
            raise DataError(f"case {cid}", f"shape {volumes[cid].shape} differs from {shape} (voxel distances)")
        shape = volumes[cid].shape
        rows.append((v - v.mean()) / (max(v.std(), 1e-12) * np.sqrt(v.size)))
    return ids, np.stack(rows) if rows else np.zeros((0, 0))


def nearest(query: np.ndarray, ref: np.ndarray, *, leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest ``ref`` row, and that row's index.

    Args:
        query: (M, D).
        ref: (N, D).
        leave_one_out: query is ref; a row is not its own neighbour.

    Returns:
        Distances (M,) and indices (M,).
    """
    if query.shape[1:] != ref.shape[1:]:
        raise DataError("memorisation", f"dimensions differ: {query.shape[1:]} vs {ref.shape[1:]}")
    dist = np.empty(len(query))
    idx = np.empty(len(query), dtype=np.int64)
    for i, q in enumerate(query):  # direct differences: exact copies give exactly 0
        d = np.sqrt(((ref - q) ** 2).sum(axis=1))
        if leave_one_out:
            d[i] = np.inf
        idx[i] = int(np.argmin(d))
        dist[i] = d[idx[i]]
    return dist, idx


def memorisation_scores(synthetic: np.ndarray, train: np.ndarray, percentile: float = 5.0) -> dict:
    """Nearest-training distances of synthetic rows against the real-to-real (leave-one-out) threshold.

    Args:
        synthetic: (M, D) synthetic vectors.
        train: (N, D) training vectors, N >= 2.
        percentile: threshold percentile of the real-to-real nearest-neighbour distances.

    Returns:
        ``distance`` (M,), ``nearest`` (M,) indices into train, ``real_nn`` (N,), ``threshold``,
        ``memorised`` (M,) booleans (distance < threshold) and ``fraction``.
    """
    if len(train) < 2:
        raise DataError("training volumes", f"memorisation needs at least 2 real training volumes, got {len(train)}")
    if len(synthetic) < 1:
        raise DataError("synthetic volumes", "memorisation needs at least 1 synthetic volume")
    dist, idx = nearest(synthetic, train)
    real_nn, _ = nearest(train, train, leave_one_out=True)
    threshold = float(np.percentile(real_nn, percentile))
    memorised = dist < threshold
    return {
        "distance": dist,
        "nearest": idx,
        "real_nn": real_nn,
        "threshold": threshold,
        "memorised": memorised,
        "fraction": float(memorised.mean()),
    }


def _space(ctx: EvalContext, space: str, syn_ids, syn, train_ids, train, backbone) -> MetricOutput:
    res = memorisation_scores(syn, train, ctx.cfg.memorisation_percentile)
    rows = [
        {"case_id": cid, "metric": f"nn_distance_{space}", "value": float(d), "backbone": backbone}
        for cid, d in zip(syn_ids, res["distance"], strict=True)
    ]
    flags = res["memorised"].astype(np.float64)
    ci: tuple[float | None, float | None] = (None, None)
    if ctx.cfg.bootstrap:
        boot = flags[ctx.rng(f"memorisation_{space}").integers(0, len(flags), (ctx.cfg.bootstrap, len(flags)))]
        ci = tuple(float(q) for q in np.quantile(boot.mean(axis=1), [0.025, 0.975]))
    summary = entry(
        res["fraction"],
        ci,
        n=len(flags),
        backbone=backbone,
        threshold=res["threshold"],
        percentile=ctx.cfg.memorisation_percentile,
        real_nn_median=float(np.median(res["real_nn"])),
        synthetic_nn_median=float(np.median(res["distance"])),
        memorised_cases=[c for c, m in zip(syn_ids, res["memorised"], strict=True) if m],
        nearest_train={c: train_ids[i] for c, i in zip(syn_ids, res["nearest"], strict=True)},
    )
    return MetricOutput(rows=rows, summary={f"memorisation_fraction_{space}": summary})


def memorisation_metric(ctx: EvalContext) -> MetricOutput:
    """Memorisation in feature space and in voxel space: per-case nearest distances and the fractions."""
    syn_ids, syn_f = ctx.synthetic_features
    train_ids, train_f = ctx.train_features
    out = _space(ctx, "feature", syn_ids, syn_f, train_ids, train_f, ctx.backbone)
    sv_ids, syn_v = voxel_vectors(ctx.synthetic)
    tv_ids, train_v = voxel_vectors(ctx.train_real)
    vox = _space(ctx, "voxel", sv_ids, syn_v, tv_ids, train_v, None)
    return MetricOutput(rows=out.rows + vox.rows, summary={**out.summary, **vox.summary})
