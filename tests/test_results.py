"""The one per-case row schema: its writer, its reader, and segmentation and image-quality rows in one frame."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmark import results
from benchmark.config import MetricsConfig
from benchmark.errors import DataError
from benchmark.metrics.evaluate import evaluate_generator
from benchmark.results import COLUMNS, SET_COLUMNS
from benchmark.segmentation.evaluate import evaluate_cases
from benchmark.tracking.tracker import MemoryTracker

JOB = {"study": "toy", "split": 1, "seed": 0, "generator": "spade_ldm"}


def _seg_rows() -> pd.DataFrame:
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[3:9, 3:9, 3:9] = 1
    pred = np.roll(gt, 1, axis=0)
    test = {"c1": (None, gt, (1.0, 1.0, 1.0)), "c2": (None, np.zeros_like(gt), (1.0, 1.0, 1.0))}
    return evaluate_cases({"c1": pred, "c2": pred}, test, study="toy", split=1, seed=0, arm="real+spade_ldm",
                          generator="spade_ldm")  # fmt: skip


def _quality_rows() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    real = {f"c{i}": rng.random((8, 8, 8), dtype=np.float32) for i in (1, 2)}
    syn = {k: v + np.float32(0.05) for k, v in real.items()}
    frame, _ = evaluate_generator(real, syn, {}, real, MetricsConfig(metrics=("psnr",)), cache_dir=None, job=JOB)
    return frame


def test_rows_of_both_kinds_are_in_the_schema_and_concatenate(tmp_path):
    seg, qual = _seg_rows(), _quality_rows()
    assert list(seg.columns) == list(COLUMNS) and list(qual.columns) == list(COLUMNS)
    tracker = MemoryTracker()
    paths = [results.write_per_case(seg, tmp_path / "seg", tracker), results.write_per_case(qual, tmp_path / "q")]
    assert tracker.artifacts == [str(paths[0])]  # logged when a tracker is given, and only then
    assert paths[0].read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = results.read_per_case(paths)
    assert list(rows.columns) == list(COLUMNS) and len(rows) == len(seg) + len(qual) == 6 + 2
    assert rows["value"].dtype == np.float64
    # each kind keeps its own keys; the other kind's columns are empty, nothing is taken from a folder name
    by_kind = rows.assign(kind=np.where(rows["arm"].isna(), "quality", "segmentation"))
    assert by_kind.groupby("kind")["metric"].apply(set).to_dict() == {
        "quality": {"psnr"},
        "segmentation": {"dice", "hd95", "assd"},
    }
    assert set(rows.study) == {"toy"} and set(rows.split) == {1} and set(rows.generator) == {"spade_ldm"}
    assert rows.loc[rows.arm.isna(), "backbone"].isna().all() and rows.loc[rows.arm.notna(), "backbone"].isna().all()
    # values survive the round trip exactly; an undefined distance stays NaN with its reason
    np.testing.assert_array_equal(rows["value"].to_numpy()[:6], seg["value"].to_numpy())
    assert rows.loc[(rows.case_id == "c2") & (rows.metric == "hd95"), "reason"].item() == "empty ground truth"
    assert math.isnan(rows.loc[(rows.case_id == "c2") & (rows.metric == "hd95"), "value"].item())


def test_a_missing_column_is_one_line_naming_it(tmp_path):
    rows = _seg_rows()
    with pytest.raises(DataError) as err:
        results.write_per_case(rows.drop(columns=["study"]), tmp_path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(tmp_path / "per_case.csv"))
    assert "missing columns ['study']" in text
    assert not (tmp_path / "per_case.csv").exists()  # nothing half-right written
    with pytest.raises(DataError, match=r"unexpected columns \['ci_low'\]"):
        results.conform(rows.assign(ci_low=0.0))
    # a file of an older layout is named by the reader
    old = tmp_path / "old.csv"
    old.write_text("case_id,metric,value\np1,dice,0.8\n")
    with pytest.raises(DataError, match=r"old.csv: missing columns \['study', 'split', 'seed', 'generator', 'arm'"):
        results.read_per_case([old])


def test_conform_orders_the_columns_and_an_empty_file_changes_no_dtype(tmp_path):
    rows = _seg_rows()
    shuffled = rows[list(reversed(COLUMNS))]
    pd.testing.assert_frame_equal(results.conform(shuffled), rows)
    empty = results.write_per_case(rows.iloc[:0], tmp_path / "empty")
    full = results.write_per_case(rows, tmp_path / "full")
    both = results.read_per_case([empty, full])
    assert len(both) == len(rows) and both["value"].dtype == np.float64
    assert list(results.read_per_case([]).columns) == list(COLUMNS)


def test_summary_round_trip_carries_the_job_and_notes(tmp_path):
    summary = {
        "fid": {"value": np.float64(12.5), "ci_low": 10.0, "ci_high": 15.0, "n": np.int64(6), "backbone": "r10",
                "note": "FID from 6 samples"},
        "kid": {"value": float("inf"), "ci_low": None, "ci_high": None, "n": 6, "backbone": "r10"},
    }  # fmt: skip
    tracker = MemoryTracker()
    path = results.write_summary(summary, tmp_path, JOB, tracker)
    assert tracker.artifacts == [str(path)]
    on_disk = json.loads(path.read_text())
    assert on_disk["metrics"]["kid"]["value"] is None  # strict JSON: no inf
    sets = results.read_summaries([path])
    assert list(sets.columns) == list(SET_COLUMNS)
    fid = sets.set_index("metric").loc["fid"]
    assert fid[["study", "split", "seed", "generator", "value", "ci_low", "n", "note"]].tolist() == [
        "toy", 1, 0, "spade_ldm", 12.5, 10.0, 6, "FID from 6 samples"
    ]  # fmt: skip
    assert sets["case_id"].isna().all() and sets["arm"].isna().all()
    assert pd.isna(sets.set_index("metric").loc["kid", "note"])
    with pytest.raises(DataError, match=r"missing \['seed'\]"):
        results.write_summary(summary, tmp_path, {k: v for k, v in JOB.items() if k != "seed"})
    bad = tmp_path / "flat.json"
    bad.write_text(json.dumps({"fid": {"value": 1.0}}))
    with pytest.raises(DataError, match="flat.json: no 'metrics' object"):
        results.read_summaries([bad])
