"""Image-quality metrics, one registry line per metric.

Each entry maps a name (as listed in ``metrics.metrics``) to a function ``EvalContext -> MetricOutput``: per-case
rows where the metric is per case, and summary entries (value, ci_low, ci_high, n, backbone) where it is not.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmark.metrics.c2st import c2st_metric
from benchmark.metrics.context import EvalContext, MetricOutput
from benchmark.metrics.distribution import fid_metric, kid_metric, mmd_metric, mmd_rbf_metric
from benchmark.metrics.fidelity import mask_fidelity_metric
from benchmark.metrics.memorisation import memorisation_metric
from benchmark.metrics.paired import ms_ssim_metric, psnr_metric

METRICS: dict[str, Callable[[EvalContext], MetricOutput]] = {
    "fid": fid_metric,
    "kid": kid_metric,
    "mmd": mmd_metric,
    "mmd_rbf": mmd_rbf_metric,
    "psnr": psnr_metric,
    "ms_ssim": ms_ssim_metric,
    "mask_fidelity": mask_fidelity_metric,
    "memorisation": memorisation_metric,
    "c2st": c2st_metric,
}

__all__ = ["METRICS", "EvalContext", "MetricOutput"]
