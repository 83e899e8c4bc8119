"""Mask fidelity with a stand-in segmenter, and memorisation distances on planted copies."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.errors import ConfigError, DataError
from benchmark.metrics.fidelity import dice, mask_fidelity
from benchmark.metrics.memorisation import memorisation_scores, nearest, voxel_vectors


def _label_map(shape=(16, 16, 8)) -> np.ndarray:
    lab = np.zeros(shape, np.int64)
    lab[4:12, 4:12, 2:6] = 2
    lab[5:11, 5:11, 3:5] = 1
    lab[0:2, :, :] = 3  # a context cluster: ignored
    return lab


def _threshold_segmenter(vol: np.ndarray) -> np.ndarray:
    return np.where(vol > 1.5, 1, np.where(vol > 0.5, 2, 0))


def test_mask_fidelity_dice_per_structure():
    lab = _label_map()
    perfect = (lab == 1) * 2.0 + (lab == 2) * 1.0  # intensities the stand-in segmenter maps back exactly
    shifted = np.roll(perfect, 1, axis=0)
    rows = mask_fidelity({"b": shifted, "a": perfect}, {"a": lab, "b": lab}, _threshold_segmenter)
    got = {(r["case_id"], r["metric"]): r["value"] for r in rows}
    assert [r["case_id"] for r in rows] == ["a", "a", "b", "b"]
    assert got[("a", "dice_cavity")] == pytest.approx(1.0) and got[("a", "dice_wall")] == pytest.approx(1.0)
    cav = lab == 1
    pred = np.roll(cav, 1, axis=0)
    expected = 2 * (cav & pred).sum() / (cav.sum() + pred.sum())
    assert got[("b", "dice_cavity")] == pytest.approx(expected)
    assert got[("b", "dice_wall")] < 1.0


def test_mask_fidelity_bad_input():
    lab = _label_map()
    with pytest.raises(DataError, match="no conditioning label map.*x"):
        mask_fidelity({"x": lab.astype(np.float32)}, {}, _threshold_segmenter)
    with pytest.raises(DataError, match="shapes differ"):
        mask_fidelity({"a": np.zeros((8, 8, 8), np.float32)}, {"a": lab}, _threshold_segmenter)
    with pytest.raises(ConfigError, match="fidelity_classes"):
        mask_fidelity({"a": lab.astype(np.float32)}, {"a": lab}, _threshold_segmenter, ("scar",))
    assert np.isnan(dice(lab, np.zeros_like(lab), 1))  # structure absent from the reference: undefined


def test_memorisation_flags_copies_of_training_volumes():
    rng = np.random.default_rng(0)
    train = {f"t{i}": rng.random((8, 8, 8), dtype=np.float32) for i in range(10)}
    synthetic = {
        "copy": train["t3"] * 2.0 + 1.0,  # an affine intensity change of t3: identical after z-scoring
        "near": train["t5"] + 0.01 * rng.standard_normal((8, 8, 8)).astype(np.float32),
        "new": rng.random((8, 8, 8), dtype=np.float32),
    }
    s_ids, s = voxel_vectors(synthetic)
    t_ids, t = voxel_vectors(train)
    res = memorisation_scores(s, t, percentile=5.0)
    by_id = dict(zip(s_ids, res["distance"], strict=True))
    assert by_id["copy"] == pytest.approx(0.0, abs=1e-6)
    assert t_ids[res["nearest"][s_ids.index("copy")]] == "t3"
    assert t_ids[res["nearest"][s_ids.index("near")]] == "t5"
    assert res["memorised"].tolist() == [True, True, False]  # sorted ids: copy, near, new
    assert res["fraction"] == pytest.approx(2 / 3)
    # leave-one-out: no training volume is its own neighbour
    d, idx = nearest(t, t, leave_one_out=True)
    assert np.all(d > 0.1) and np.all(idx != np.arange(len(t)))
    assert res["threshold"] == pytest.approx(np.percentile(d, 5.0))


def test_memorisation_bad_input():
    rng = np.random.default_rng(1)
    with pytest.raises(DataError, match="at least 2 real training volumes"):
        memorisation_scores(rng.random((3, 4)), rng.random((1, 4)))
    with pytest.raises(DataError, match="differs from"):
        voxel_vectors({"a": np.zeros((4, 4, 4), np.float32), "b": np.zeros((4, 4, 5), np.float32)})
