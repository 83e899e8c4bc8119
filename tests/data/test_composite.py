"""Composite label maps (Algorithm 1) against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from benchmark.config import CompositeConfig
from benchmark.data.composite import CompositeModel, apply_composite, composite_maps, fit_composite
from benchmark.errors import ConfigError, DataError


def _toy():
    """Four intensity slabs along x: air 0.0, fat-like 0.3, muscle-like 0.6, blood-like 0.9; expert labels inside."""
    img = np.zeros((16, 8, 8), np.float32)
    img[4:8] = 0.3
    img[8:12] = 0.6
    img[12:16] = 0.9
    lab = np.zeros(img.shape, np.uint8)
    lab[13:15, 3:5, 3:5] = 1  # cavity inside the bright slab
    lab[12, 3:5, 3:5] = 2  # wall
    return img, lab


def test_hand_computed_example_without_smoothing():
    img, lab = _toy()
    cfg = CompositeConfig(k=4, sigma=1e-6, seed=0)
    model = fit_composite({"a": img}, {"a": lab}, cfg)
    assert sorted(round(c, 3) for c in model.centers) == [0.0, 0.3, 0.6, 0.9]
    assert round(model.centers[model.background], 3) == 0.0  # the air cluster is dropped as background
    out = apply_composite(model, img, lab)
    expected = np.zeros_like(lab)
    expected[4:8] = 3  # context clusters relabelled 3.. by increasing intensity
    expected[8:12] = 4
    expected[12:16] = 5
    expected[lab == 1] = 1
    expected[lab == 2] = 2
    np.testing.assert_array_equal(out, expected)


def test_smoothing_sigma_one_matches_manual_computation():
    img, lab = _toy()
    cfg = CompositeConfig(k=4, sigma=1.0, seed=0)
    model = fit_composite({"a": img}, {"a": lab}, cfg)
    smooth = gaussian_filter(img.astype(np.float64), 1.0)
    nearest = np.abs(smooth[..., None] - np.asarray(model.centers)).argmin(-1)
    manual = model.label_of_cluster()[nearest]
    manual[lab == 1], manual[lab == 2] = 1, 2
    np.testing.assert_array_equal(apply_composite(model, img, lab), manual)
    # smoothing moves slab borders: voxels at x=7 (0.3 slab next to 0.6) are not all in the 0.3 cluster
    assert set(np.unique(manual)) == {0, 1, 2, 3, 4, 5}


def test_expert_voxels_are_excluded_from_clustering():
    img, lab = _toy()
    lab2 = lab.copy()
    lab2[12:16] = 1  # the whole bright slab is expert: only three intensities remain for context
    model = fit_composite({"a": img}, {"a": lab2}, CompositeConfig(k=3, sigma=1e-6))
    assert sorted(round(c, 3) for c in model.centers) == [0.0, 0.3, 0.6]


def test_fit_on_training_cases_applies_to_unseen_case_and_is_deterministic():
    rng = np.random.default_rng(0)
    imgs, labs = {}, {}
    for i in range(3):
        img, lab = _toy()
        imgs[f"c{i}"] = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
        labs[f"c{i}"] = lab
    cfg = CompositeConfig(k=4, sigma=1.0, seed=3)
    m1, maps1 = composite_maps(imgs, labs, ["c0", "c1"], cfg)
    m2, maps2 = composite_maps(imgs, labs, ["c0", "c1"], cfg)
    assert m1 == m2
    for cid in imgs:
        np.testing.assert_array_equal(maps1[cid], maps2[cid])
    assert maps1["c2"].max() == cfg.k + 1  # labels 0..k+1, num_classes = k + 2
    assert cfg.num_classes == 6


def test_model_roundtrip(tmp_path):
    m = CompositeModel(centers=(0.1, 0.5, 0.0), background=2, sigma=1.0)
    assert CompositeModel.load(m.save(tmp_path / "m.json")) == m
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        CompositeModel.load(tmp_path / "bad.json")


@pytest.mark.parametrize("k", [1, 11])
def test_k_outside_range_is_refused(k):
    with pytest.raises(ConfigError, match="composite.k"):
        CompositeConfig(k=k)


def test_label_out_of_range_and_shape_mismatch_name_the_case():
    img, lab = _toy()
    bad = lab.copy()
    bad[0, 0, 0] = 7
    model = fit_composite({"a": img}, {"a": lab}, CompositeConfig(k=4, sigma=1e-6))
    with pytest.raises(DataError, match=r"case9.*\[7\]"):
        apply_composite(model, img, bad, "case9")
    with pytest.raises(DataError, match="case9.*shape"):
        apply_composite(model, img[:8], lab, "case9")


def test_k_selection_prefers_the_true_number_of_intensity_classes():
    img, lab = _toy()
    rng = np.random.default_rng(1)
    noisy = img + rng.normal(0, 0.01, img.shape).astype(np.float32)
    from benchmark.data.composite import k_selection

    df = k_selection({"a": noisy}, {"a": lab}, range(2, 7), CompositeConfig(sigma=1e-6))
    assert list(df.k) == [2, 3, 4, 5, 6]
    assert int(df.loc[df.silhouette.idxmax(), "k"]) == 4  # four intensity slabs
    assert int(df.loc[df.davies_bouldin.idxmin(), "k"]) == 4
