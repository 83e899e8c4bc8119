"""The phantom's second scanner (site B): other contrast, noise, field of view and slice thickness, same anatomy."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
from scipy import ndimage

from benchmark.config import PhantomConfig, load_config
from benchmark.data import phantom
from benchmark.data.io import load_label, load_volume
from benchmark.data.phantom import AIR, MYO, generate_phantom, make_anatomy, phantom_dir, render_scan
from benchmark.data.phantom_sites import SITES, scan_spacing
from benchmark.errors import ConfigError

SHAPE = (48, 48, 24)


def _scans(site: str, patients=range(3)) -> list[tuple[phantom.Anatomy, np.ndarray]]:
    cfg = PhantomConfig(shape=SHAPE, site=site)
    out = []
    for p in patients:
        anat = make_anatomy(cfg, np.random.default_rng([cfg.seed, p]))
        out.append((anat, render_scan(anat, cfg, np.random.default_rng([cfg.seed, p, 1]), post_ablation=False)))
    return out


@pytest.fixture(scope="module")
def sites() -> dict[str, list]:
    return {"A": _scans("A"), "B": _scans("B")}


def test_site_a_is_the_default_and_keeps_its_cache_folder(tmp_path):
    assert PhantomConfig().site == "A"
    assert phantom_dir(PhantomConfig(), tmp_path).name == "phantom_v1_dbce9d516207ab24"  # as before sites existed
    assert phantom_dir(PhantomConfig(site="B"), tmp_path) != phantom_dir(PhantomConfig(), tmp_path)
    choices = typing.get_args(typing.get_type_hints(PhantomConfig)["site"])
    assert set(choices) == set(SITES)
    assert len(SITES["B"].intensity) == len(phantom.INTENSITY)
    with pytest.raises(ConfigError, match="phantom.site"):
        load_config(None, ["data.phantom.site=C"])


def test_site_b_geometry_wider_field_of_view_thicker_slices(tmp_path):
    tiny = PhantomConfig(n_patients=2, scans_per_patient=(1, 1), shape=(32, 32, 16))
    b = dataclasses.replace(tiny, site="B")
    assert scan_spacing(tiny) == tiny.spacing and scan_spacing(b) == pytest.approx((1.5, 1.5, 4.0))
    man_a, man_b = generate_phantom(tiny, tmp_path), generate_phantom(b, tmp_path)
    assert [c.case_id for c in man_a.cases] == [c.case_id for c in man_b.cases]  # the same patients
    vol = load_volume(man_b.path(man_b.cases[0], "image"))
    assert vol.array.shape == (32, 32, 16) and man_b.cases[0].spacing == pytest.approx((1.5, 1.5, 4.0))
    np.testing.assert_allclose(np.diag(vol.affine)[:3], (1.5, 1.5, 4.0))
    np.testing.assert_allclose(np.diag(load_volume(man_a.path(man_a.cases[0], "image")).affine)[:3], tiny.spacing)


def test_site_b_keeps_valid_labels_and_the_anatomy_in_mm(sites):
    vox_a, vox_b = np.prod(scan_spacing(PhantomConfig())), np.prod(scan_spacing(PhantomConfig(site="B")))
    for (anat_a, _), (anat_b, _) in zip(sites["A"], sites["B"], strict=True):
        assert set(np.unique(anat_b.label)) == {0, 1, 2}
        cavity = anat_b.label == 1
        _, n = ndimage.label(cavity)
        assert n == 1  # one connected cavity, vein stubs included
        # a larger field of view: the LA covers fewer voxels, its volume in mm^3 stays
        assert cavity.sum() < 0.6 * (anat_a.label == 1).sum()
        assert cavity.sum() * vox_b == pytest.approx((anat_a.label == 1).sum() * vox_a, rel=0.1)
        assert (anat_b.tissue == AIR).mean() > (anat_a.tissue == AIR).mean() + 0.1  # more air around the body


def _ratios(anat: phantom.Anatomy, image: np.ndarray) -> tuple[float, float, float]:
    blood = np.median(image[anat.label == 1])
    background = ndimage.binary_erosion(anat.tissue == AIR, iterations=3)  # away from the body's blurred edge
    return (
        blood / np.median(image[anat.label == 2]),
        blood / np.median(image[anat.tissue == MYO]),
        image[background].std() / blood,
    )


def test_site_b_contrast_and_noise(sites):
    a = np.array([_ratios(*s) for s in sites["A"]])
    b = np.array([_ratios(*s) for s in sites["B"]])
    # site A: bright blood over a nulled wall and myocardium; site B (TI off the null point) much less so
    assert (a[:, 0] > 3.0).all() and (a[:, 1] > 3.0).all()
    assert (b[:, 0] < 2.5).all() and (b[:, 1] < 2.5).all()
    assert (b[:, :2] < 0.6 * a[:, :2]).all()
    # background noise relative to blood: the Rayleigh floor of noise_sigma (0.04 x 0.655), 1.75 times at site B
    assert a[:, 2].mean() == pytest.approx(0.04 * np.sqrt(2 - np.pi / 2), rel=0.3)
    assert b[:, 2].mean() / a[:, 2].mean() == pytest.approx(1.75, rel=0.15)


def test_site_b_scans_are_seeded(tmp_path):
    b = PhantomConfig(n_patients=1, scans_per_patient=(1, 1), shape=(24, 24, 12), site="B")
    one = generate_phantom(b, tmp_path / "x")
    two = generate_phantom(b, tmp_path / "y")
    first = one.cases[0]
    assert first.sha256_image == two.cases[0].sha256_image and first.sha256_label == two.cases[0].sha256_label
    assert set(np.unique(load_label(one.path(first, "label")).array)) == {0, 1, 2}
