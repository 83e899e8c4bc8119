"""PSNR and 3D MS-SSIM against independent numpy/scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from benchmark.errors import DataError
from benchmark.metrics.paired import data_range, ms_ssim_3d, msssim_min_shape, psnr


def _volume(shape=(24, 24, 16), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32) * 3.0


def _gauss(k: int, sigma: float) -> np.ndarray:
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _reference_ms_ssim(x, y, *, L, kernel, sigma, weights, k1=0.01, k2=0.03) -> float:
    """Straightforward float64 MS-SSIM: explicit windows, 2x2x2 block means between scales."""
    w = np.einsum("i,j,k->ijk", *(_gauss(k, sigma) for k in kernel))
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    factors = []
    for j in range(len(weights)):
        wx, wy = sliding_window_view(x, kernel), sliding_window_view(y, kernel)
        mx, my = (wx * w).sum((3, 4, 5)), (wy * w).sum((3, 4, 5))
        vx = (wx * wx * w).sum((3, 4, 5)) - mx**2
        vy = (wy * wy * w).sum((3, 4, 5)) - my**2
        cxy = (wx * wy * w).sum((3, 4, 5)) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        if j == len(weights) - 1:
            factors.append(max(0.0, (((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean()))
        else:
            factors.append(max(0.0, cs.mean()))
            s = [d // 2 * 2 for d in x.shape]
            x = x[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean((1, 3, 5))
            y = y[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean((1, 3, 5))
    return float(np.prod(np.array(factors) ** np.array(weights)))


def test_psnr_matches_numpy():
    real = _volume()
    syn = real + np.random.default_rng(1).normal(0, 0.1, real.shape).astype(np.float32)
    L = float(real.max() - real.min())
    expected = 10 * np.log10(L**2 / np.mean((syn.astype(np.float64) - real) ** 2))
    assert data_range(real, None) == pytest.approx(L)
    assert psnr(syn, real, data_range(real, None)) == pytest.approx(expected, rel=1e-9)
    assert psnr(syn, real, 2.0) == pytest.approx(20 * np.log10(2.0) - 10 * np.log10(np.mean((syn - real) ** 2)))
    assert psnr(real, real, L) == float("inf")
    with pytest.raises(DataError, match="constant"):
        data_range(np.ones((4, 4, 4), np.float32), None, "c7")


def test_ms_ssim_is_one_for_identical_volumes():
    real = _volume()
    assert ms_ssim_3d(real, real, data_range=3.0, kernel=(5, 5, 3)) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_decreases_monotonically_with_noise():
    real = _volume()
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(real.shape).astype(np.float32)
    vals = [ms_ssim_3d(real + s * noise, real, data_range=3.0, kernel=(5, 5, 3)) for s in (0.01, 0.05, 0.1, 0.3, 1.0)]
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False)), vals
    assert vals[0] > 0.99 and vals[-1] < 0.8


@pytest.mark.parametrize(
    ("kernel", "weights"), [((5, 5, 3), (0.0448, 0.2856, 0.3001)), ((3, 3, 3), (0.0448, 0.2856, 0.3001, 0.2363))]
)
def test_ms_ssim_matches_straightforward_implementation(kernel, weights):
    real = _volume((26, 25, 24), seed=3)
    syn = real + np.random.default_rng(4).normal(0, 0.3, real.shape).astype(np.float32)
    ours = ms_ssim_3d(syn, real, data_range=3.0, kernel=kernel, sigma=1.5, weights=weights)
    ref = _reference_ms_ssim(syn, real, L=3.0, kernel=kernel, sigma=1.5, weights=weights)
    assert 0.3 < ref < 0.99
    assert ours == pytest.approx(ref, abs=1e-4)


def test_ms_ssim_fits_paper_and_default_volumes_and_names_the_minimum():
    assert msssim_min_shape((5, 5, 3), 3) == (20, 20, 12)
    assert all(s >= m for s, m in zip((48, 48, 24), msssim_min_shape((5, 5, 3), 3), strict=True))
    assert all(s >= m for s, m in zip((256, 256, 88), msssim_min_shape((11, 11, 7), 3), strict=True))
    small = _volume((24, 24, 10))
    with pytest.raises(DataError, match=r"case c1: .*too small.*minimum size is \(20, 20, 12\)"):
        ms_ssim_3d(small, small, data_range=1.0, kernel=(5, 5, 3), case_id="c1")
    with pytest.raises(DataError, match="differs from real"):
        ms_ssim_3d(small, _volume(), data_range=1.0)
