"""FID, KID and MMD rank real < blurred < noise on a small phantom subset (benchmarks/metric_ordering.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmark.config import MetricsConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from metric_ordering import REQUIRED, degraded_sets, measure, ordering_holds, phantom_sets  # noqa: E402


def test_metrics_rank_degradations_on_phantom(tmp_path):
    a, b = phantom_sets(12, tmp_path)
    assert len(a) == len(b) == 6 and not set(a) & set(b)
    cfg = MetricsConfig(
        backbone="resnet10", metrics=("fid", "kid", "mmd", "mmd_rbf"), bootstrap=0, kid_subset_size=4, fixed_n=4
    )
    others = degraded_sets(b, blur_sigma=1.5)
    results = measure(a, {k: others[k] for k in ("real_B", "blurred_B", "noise")}, cfg, tmp_path / "features")
    for key in REQUIRED:
        assert ordering_holds(results, key), (key, {s: r[key]["value"] for s, r in results.items()})
    assert results["real_B"]["mmd_rbf"]["value"] < min(results[s]["mmd_rbf"]["value"] for s in ("blurred_B", "noise"))
