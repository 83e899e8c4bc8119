"""Paired metrics: each synthetic volume against the real volume whose label map produced it.

* PSNR: ``10 log10(L^2 / MSE)``, L = ``metrics.psnr_data_range`` or the real volume's max - min.
* 3D MS-SSIM (Wang et al. 2003) with the paper's three scales and exponents (0.0448, 0.2856, 0.3001),
  k1 = 0.01, k2 = 0.03 and a Gaussian window of size ``metrics.msssim_kernel`` per axis (sigma
  ``metrics.msssim_sigma``). The standard product form is used unchanged:
  ``MS-SSIM = prod_{j<J} relu(cs_j)^w_j * relu(ssim_J)^w_J``, with cs/ssim averaged over the valid window
  positions of each scale and 2x average pooling between scales. The exponents are not renormalised (they sum
  to 0.6305), so values are not comparable with five-scale MS-SSIM. Every axis needs at least
  ``kernel * 2^(scales - 1)`` voxels (the window must fit the coarsest scale): (20, 20, 12) for the defaults,
  so both the 88-slice paper volumes and the 32x32x16 default study volumes work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics.regression import compute_ssim_and_cs

from benchmark.errors import DataError
from benchmark.metrics.context import MetricOutput, entry
from benchmark.metrics.features import check_volume

if TYPE_CHECKING:
    from benchmark.metrics.context import EvalContext


def data_range(
    real: np.ndarray, configured: float | None, case_id: str = "?", key: str = "metrics.psnr_data_range"
) -> float:
    """The dynamic range L: the configured value or the real volume's max - min (which must be > 0)."""
    if configured is not None:
        return float(configured)
    rng = float(real.max()) - float(real.min())
    if rng <= 0.0:
        raise DataError(f"case {case_id}", f"real volume is constant (data range 0); set {key}")
    return rng


def psnr(synthetic: np.ndarray, real: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical volumes)."""
    mse = float(np.mean((synthetic.astype(np.float64) - real.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(data_range**2 / mse))


def msssim_min_shape(kernel: Sequence[int], n_scales: int) -> tuple[int, ...]:
    """The smallest volume for which the window still fits at the coarsest of ``n_scales`` scales."""
    return tuple(int(k) * 2 ** (n_scales - 1) for k in kernel)


def ms_ssim_3d(
    synthetic: np.ndarray,
    real: np.ndarray,
    *,
    data_range: float,
    kernel: Sequence[int] = (5, 5, 3),
    sigma: float = 1.5,
    weights: Sequence[float] = (0.0448, 0.2856, 0.3001),
    k1: float = 0.01,
    k2: float = 0.03,
    case_id: str = "?",
) -> float:
    """3D multi-scale SSIM of two (X, Y, Z) volumes (see the module docstring for the exact form).

    Args:
        synthetic: the synthetic volume.
        real: the real reference volume (same shape).
        data_range: dynamic range L of the intensities.
        kernel: Gaussian window size per axis (odd).
        sigma: Gaussian window standard deviation, voxels.
        weights: one exponent per scale, finest first.
        k1: luminance stability constant.
        k2: contrast stability constant.
        case_id: named in error messages.

    Returns:
        MS-SSIM in [0, 1] (1 for identical volumes).
    """
    if synthetic.shape != real.shape:
        raise DataError(f"case {case_id}", f"synthetic shape {synthetic.shape} differs from real {real.shape}")
    minimum = msssim_min_shape(kernel, len(weights))
    if any(s < m for s, m in zip(real.shape, minimum, strict=True)):
        raise DataError(
            f"case {case_id}",
            f"volume {tuple(real.shape)} is too small for 3D MS-SSIM with {len(weights)} scales and kernel "
            f"{tuple(kernel)}: the minimum size is {minimum}; lower metrics.msssim_kernel or use fewer "
            "metrics.msssim_weights",
        )
    x = torch.from_numpy(np.ascontiguousarray(synthetic, dtype=np.float32))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float32))[None, None]
    sig = (float(sigma),) * 3
    factors = []
    for j in range(len(weights)):
        ssim, cs = compute_ssim_and_cs(
            x, y, spatial_dims=3, kernel_size=tuple(kernel), kernel_sigma=sig, data_range=data_range, k1=k1, k2=k2
        )
        if j == len(weights) - 1:
            factors.append(torch.relu(ssim.mean()))
        else:
            factors.append(torch.relu(cs.mean()))
            x, y = F.avg_pool3d(x, kernel_size=2), F.avg_pool3d(y, kernel_size=2)
    w = torch.tensor(list(weights), dtype=torch.float64)
    return float(torch.prod(torch.stack(factors).double() ** w))


def _pairs(ctx: EvalContext) -> list[tuple[str, np.ndarray, np.ndarray]]:
    missing = sorted(set(ctx.synthetic) - set(ctx.real))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError("real volumes", f"no real volume for {len(missing)} synthetic case(s): {shown}")
    out = []
    for cid in sorted(ctx.synthetic):
        syn, real = check_volume(ctx.synthetic[cid], cid), check_volume(ctx.real[cid], cid)
        if syn.shape != real.shape:
            raise DataError(f"case {cid}", f"synthetic shape {syn.shape} differs from real {real.shape}")
        out.append((cid, syn, real))
    return out


def mean_entry(values: Sequence[float], *, n_boot: int, rng: np.random.Generator) -> dict:
    """Mean of per-case values with a percentile bootstrap CI over cases."""
    v = np.asarray(values, dtype=np.float64)
    ci: tuple[float | None, float | None] = (None, None)
    if n_boot and len(v) > 1:
        means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
        ci = tuple(float(q) for q in np.quantile(means, [0.025, 0.975]))
    return entry(v.mean(), ci, n=len(v), interval="bootstrap_cases")


def psnr_metric(ctx: EvalContext) -> MetricOutput:
    """Per-case PSNR rows and their mean (``psnr_mean``)."""
    rows = [
        {"case_id": cid, "metric": "psnr", "value": psnr(s, r, data_range(r, ctx.cfg.psnr_data_range, cid))}
        for cid, s, r in _pairs(ctx)
    ]
    summary = {"psnr_mean": mean_entry([r["value"] for r in rows], n_boot=ctx.cfg.bootstrap, rng=ctx.rng("psnr"))}
    return MetricOutput(rows=rows, summary=summary)


def ms_ssim_metric(ctx: EvalContext) -> MetricOutput:
    """Per-case 3D MS-SSIM rows and their mean (``ms_ssim_mean``)."""
    cfg = ctx.cfg
    rows = []
    for cid, s, r in _pairs(ctx):
        value = ms_ssim_3d(
            s,
            r,
            data_range=data_range(r, cfg.msssim_data_range, cid, "metrics.msssim_data_range"),
            kernel=cfg.msssim_kernel,
            sigma=cfg.msssim_sigma,
            weights=cfg.msssim_weights,
            case_id=cid,
        )
        rows.append({"case_id": cid, "metric": "ms_ssim", "value": value})
    summary = {"ms_ssim_mean": mean_entry([r["value"] for r in rows], n_boot=cfg.bootstrap, rng=ctx.rng("ms_ssim"))}
    return MetricOutput(rows=rows, summary=summary)
