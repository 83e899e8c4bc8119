"""Corruptions: seeded, pure, on the same grid, and graded (PSNR to the clean volume falls with severity)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.config import PhantomConfig
from benchmark.data.phantom import make_anatomy, render_scan
from benchmark.errors import ConfigError, DataError
from benchmark.robustness import CORRUPTIONS, SEVERITIES, case_seed, corrupt, grid
from benchmark.robustness.corruptions import LEVELS, SEEDED

CFG = PhantomConfig(shape=(32, 32, 16), spacing=(2.5, 2.5, 5.0))  # the default study's grid and field of view


def _phantom(patient: int) -> np.ndarray:
    anat = make_anatomy(CFG, np.random.default_rng([CFG.seed, patient]))
    vol = render_scan(anat, CFG, np.random.default_rng([CFG.seed, patient, 1]), post_ablation=False)
    lo, hi = np.percentile(vol, [0.5, 99.5])
    return np.clip((vol - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)  # as the study's percentile normalisation


@pytest.fixture(scope="module")
def volumes() -> list[np.ndarray]:
    return [_phantom(0), _phantom(1)]


def _psnr(clean: np.ndarray, other: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / np.mean((clean.astype(np.float64) - other) ** 2)))


def test_registry_grid_and_levels():
    assert set(CORRUPTIONS) == set(LEVELS) and set(SEEDED) < set(CORRUPTIONS)
    assert {"noise", "bias_field", "blur", "gamma", "motion", "ghosting", "slice_thickness"} <= set(CORRUPTIONS)
    points = grid()
    assert len(points) == len(CORRUPTIONS) * 3 and points[:3] == [("noise", 1), ("noise", 2), ("noise", 3)]
    assert grid(["blur"], severities=(3,)) == [("blur", 3)]
    with pytest.raises(ConfigError, match="unknown; choices"):
        grid(["fog"])
    with pytest.raises(ConfigError, match="severity 4"):
        corrupt(np.ones((4, 4, 4)), "blur", 4, 0)
    with pytest.raises(DataError, match="NaN"):
        corrupt(np.full((4, 4, 4), np.nan), "blur", 1, 0)


def test_case_seed_is_fixed_per_case_and_differs_between_cases():
    assert case_seed(0, "ph0001_s1") == case_seed(0, "ph0001_s1")
    seeds = {case_seed(0, f"ph{i:04d}_s1") for i in range(50)}
    assert len(seeds) == 50 and max(seeds) < 2**32
    assert case_seed(1, "ph0001_s1") != case_seed(0, "ph0001_s1")


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_seeded_same_grid_and_input_untouched(name, volumes):
    vol = volumes[0]
    before = vol.copy()
    a = corrupt(vol, name, 2, seed=11)
    np.testing.assert_array_equal(vol, before)  # pure: the input is not modified
    assert a.shape == vol.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, corrupt(vol, name, 2, seed=11))
    assert np.abs(a - vol).mean() > 1e-3  # it did corrupt
    other = corrupt(vol, name, 2, seed=12)
    if name in SEEDED:
        assert np.abs(a - other).mean() > 1e-3
    else:
        np.testing.assert_array_equal(a, other)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_psnr_falls_strictly_with_severity(name, volumes):
    for vol in volumes:
        for seed in (0, 5):
            psnr = [_psnr(vol, corrupt(vol, name, s, seed)) for s in SEVERITIES]
            assert psnr[0] > psnr[1] > psnr[2], (name, seed, psnr)
            assert psnr[0] < 45.0  # even severity 1 is a visible change


def test_noise_has_the_severity_s_standard_deviation():
    vol = np.zeros((32, 32, 16), dtype=np.float32)
    vol[:, 16:] = 1.0  # range 1; where the signal is 1, Rician noise of std s is close to Gaussian
    for severity, frac in zip(SEVERITIES, LEVELS["noise"], strict=True):
        out = corrupt(vol, "noise", severity, seed=3)
        assert out[:, 20:28].std() == pytest.approx(frac, rel=0.08)
        # the background holds the Rayleigh floor: mean s * sqrt(pi / 2)
        assert out[:, :8].mean() == pytest.approx(frac * np.sqrt(np.pi / 2), rel=0.08)


def test_slice_thickness_keeps_in_plane_detail_and_averages_along_z():
    rng = np.random.default_rng(0)
    plane = rng.random((16, 16, 1), dtype=np.float32)
    constant_z = np.repeat(plane, 12, axis=2)
    np.testing.assert_allclose(corrupt(constant_z, "slice_thickness", 3, 0), constant_z, atol=1e-5)
    stripes = np.zeros((8, 8, 12), dtype=np.float32)
    stripes[..., ::2] = 1.0  # alternate slices: thick slices average them out
    out = corrupt(stripes, "slice_thickness", 1, 0)
    assert np.abs(out - 0.5).max() < 1e-5


def test_gamma_and_bias_field_shapes():
    vol = np.linspace(0.0, 2.0, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    out = corrupt(vol, "gamma", 3, 0)
    assert out.min() == pytest.approx(0.0, abs=1e-6) and out.max() == pytest.approx(2.0, rel=1e-5)
    mid = vol.size // 2
    assert out.ravel()[mid] == pytest.approx(2.0 * (vol.ravel()[mid] / 2.0) ** LEVELS["gamma"][2], rel=1e-4)
    ratio = corrupt(np.ones((8, 8, 8)) + vol, "bias_field", 2, 0) / (np.ones((8, 8, 8)) + vol)
    low = corrupt(np.ones((8, 8, 8)) + vol, "bias_field", 1, 0) / (np.ones((8, 8, 8)) + vol)
    # a multiplicative field: severity 2 is the severity-1 field's log doubled (the same draw, scaled)
    np.testing.assert_allclose(np.log(ratio), 2.0 * np.log(low), atol=1e-4)
