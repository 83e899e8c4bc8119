"""Per-case Dice, HD95 and ASSD in mm."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.results import COLUMNS
from benchmark.segmentation.evaluate import case_metrics, evaluate_cases, summarize


def _cubes(shift: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A 10^3 cube and the same cube moved ``shift`` voxels along x."""
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[4:14, 4:14, 4:14] = 1
    pred = np.zeros_like(gt)
    pred[4 + shift : 14 + shift, 4:14, 4:14] = 1
    return pred, gt


def _as_dict(rows):
    return {m: (v, r) for m, v, r in rows}


def test_dice_hd95_assd_known_values():
    pred, gt = _cubes(2)
    m = _as_dict(case_metrics(pred, gt, (1.0, 1.0, 1.0), 2))
    assert m["dice"][0] == pytest.approx(0.8)  # overlap 8x10x10 of two 1000-voxel cubes
    assert m["hd95"][0] == pytest.approx(2.0)
    # surface voxels 10^3 - 8^3 = 488 per cube; summed nearest-surface distances 336 in each direction
    assert m["assd"][0] == pytest.approx(336 / 488, rel=1e-5)
    same = _as_dict(case_metrics(gt, gt, (1.0, 1.0, 1.0), 2))
    assert same["dice"][0] == pytest.approx(1.0) and same["hd95"][0] == 0.0 and same["assd"][0] == 0.0


def test_distances_are_in_mm():
    pred, gt = _cubes(2)
    iso = _as_dict(case_metrics(pred, gt, (0.625, 0.625, 0.625), 2))
    assert iso["hd95"][0] == pytest.approx(2 * 0.625)
    assert iso["assd"][0] == pytest.approx(0.625 * 336 / 488, rel=1e-5)
    # the shift is along x: only the x spacing changes the Hausdorff distance
    along = _as_dict(case_metrics(pred, gt, (2.0, 1.0, 1.0), 2))
    across = _as_dict(case_metrics(pred, gt, (1.0, 2.0, 2.0), 2))
    assert along["hd95"][0] == pytest.approx(4.0)
    assert across["hd95"][0] == pytest.approx(2.0)
    assert along["dice"] == across["dice"]


def test_empty_ground_truth_and_prediction_give_nan_with_reason():
    pred, gt = _cubes(0)
    empty = np.zeros_like(gt)
    m = _as_dict(case_metrics(pred, empty, (1.0, 1.0, 1.0), 2))
    assert all(math.isnan(v) and r == "empty ground truth" for v, r in m.values())
    m = _as_dict(case_metrics(empty, gt, (1.0, 1.0, 1.0), 2))
    assert m["dice"] == (0.0, "")
    assert math.isnan(m["hd95"][0]) and m["hd95"][1] == "empty prediction"
    assert math.isnan(m["assd"][0]) and m["assd"][1] == "empty prediction"


def test_evaluate_cases_rows_and_wall_metrics():
    pred, gt = _cubes(2)
    label = gt.copy()
    label[3:15, 3:15, 3:15][label[3:15, 3:15, 3:15] == 0] = 2  # a one-voxel wall shell
    test = {"b": (None, label, (1.0, 1.0, 1.0)), "a": (None, np.zeros_like(gt), (1.0, 1.0, 1.0))}
    rows = evaluate_cases({"a": pred, "b": pred}, test, study="s", split=1, seed=2, arm="real", target="cavity")
    assert list(rows.columns) == list(COLUMNS)
    keys = rows[["study", "split", "seed", "generator", "arm", "backbone"]].drop_duplicates().values.tolist()
    assert keys == [["s", 1, 2, "", "real", ""]]
    assert rows["case_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert rows.loc[rows.case_id == "b", "value"].tolist()[0] == pytest.approx(0.8)
    assert (rows.loc[rows.case_id == "a", "reason"] == "empty ground truth").all()
    means = summarize(rows)
    assert means["mean_dice"] == pytest.approx(0.8) and means["n_undefined_hd95"] == 1
    walls = evaluate_cases({"b": label}, {"b": test["b"]}, target="cavity_wall")
    assert set(walls.metric) == {"dice", "hd95", "assd", "dice_wall", "hd95_wall", "assd_wall"}
    assert walls.loc[walls.metric == "dice_wall", "value"].item() == pytest.approx(1.0)
    with pytest.raises(DataError, match="no prediction for test cases"):
        evaluate_cases({"b": pred}, test)


def test_identity_spacing_on_a_sub_millimetre_dataset():
    pred, gt = _cubes(2)
    test = {"c": (None, gt, (1.0, 1.0, 1.0))}
    with pytest.warns(UserWarning, match=r"c: identity spacing .* 0.625"):
        rows = evaluate_cases({"c": pred}, test, expected_spacing=(0.625, 0.625, 0.625))
    assert rows.loc[rows.metric == "hd95", "reason"].item() == "identity spacing: distances in voxels"
    with pytest.raises(DataError, match="c: identity spacing"):
        evaluate_cases({"c": pred}, test, expected_spacing=(0.625, 0.625, 0.625), spacing_policy="refuse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real spacing on the same dataset: no warning
        evaluate_cases({"c": pred}, {"c": (None, gt, (0.625,) * 3)}, expected_spacing=(0.625, 0.625, 0.625))
