"""One segmentation job end to end on toy cases: determinism and what it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.config import AugmentConfig, SegmentationConfig, TrainConfig
from benchmark.errors import ConfigError
from benchmark.results import COLUMNS
from benchmark.segmentation.arms import audit_arm, build_arm
from benchmark.segmentation.budget import budget_steps
from benchmark.segmentation.model import load_segmenter
from benchmark.segmentation.train import make_batch_fn, train_arm
from benchmark.tracking.tracker import MemoryTracker

SEG = SegmentationConfig(
    channels=(4, 8, 8, 8, 8),
    strides=(2, 2, 2, 1),
    num_res_units=1,
    steps=6,
    lr=1e-2,
    augment=AugmentConfig(flip=0.5, affine=0.5, noise=0.5, gamma=0.5, bias_field=0.5, blur=0.2),
)
TRAIN = TrainConfig(checkpoint_every=0, log_every=3, threads=1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(tmp_path, name, cases, split, tracker=None):
    arm = build_arm("real+augmented", split.train_cases, split.test_cases, cases, {}, ratio=0.5, seed=0)
    test = {c: cases[c] for c in split.test_cases}
    rows = train_arm(
        arm, test, SEG, TRAIN, out_dir=tmp_path / name, seed=3, split=0, study="toy", tracker=tracker,
        audit=audit_arm(arm, split),
    )  # fmt: skip
    return arm, rows


def test_same_split_arm_and_seed_give_identical_dice(tmp_path, cases, split):
    tracker = MemoryTracker()
    arm, first = _run(tmp_path, "a", cases, split, tracker)
    _, second = _run(tmp_path, "b", cases, split)
    dice = first[first.metric == "dice"]
    assert len(dice) == 2 and ((dice["value"] > 0.05) & (dice["value"] < 1.0)).all()  # a model that learned a little
    pd.testing.assert_frame_equal(first, second)
    # the files are what was returned, and the counts are recorded
    on_disk = pd.read_csv(tmp_path / "a" / "per_case.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_allclose(on_disk["value"].astype(float), first["value"].astype(float))
    assert list(on_disk.columns) == list(COLUMNS)
    keys = on_disk[["study", "split", "seed", "arm"]].drop_duplicates().values.tolist()
    assert keys == [["toy", 0, 3, "real+augmented"]]
    record = json.loads((tmp_path / "a" / "arm.json").read_text())
    assert (record["n_real"], record["n_synthetic"], record["n_augmented"]) == (6, 0, 3)
    assert record["leaky"] is False and record["steps"] == SEG.steps
    assert record["train_seconds"] > 0 and len(record["class_weights"]) == 2
    assert tracker.tags["arm"] == "real+augmented" and tracker.tags["leaky"] == "false"
    assert any(name == "mean_dice" for name, _, _ in tracker.metrics)
    assert {p.rsplit("/", 1)[-1] for p in tracker.artifacts} == {"per_case.csv", "arm.json"}
    assert not list((tmp_path / "a").glob("*tmp*"))
    # the saved weights reproduce the job's predictions
    seg = load_segmenter(tmp_path / "a", SEG)
    pred = seg.predict(cases["p3_s1"][0])
    gt = cases["p3_s1"][1] == 1
    dice = 2 * np.sum((pred == 1) & gt) / (np.sum(pred == 1) + np.sum(gt))
    assert dice == pytest.approx(first.loc[(first.case_id == "p3_s1") & (first.metric == "dice"), "value"].item())


def test_batches_are_a_function_of_the_step_rng(cases, split):
    arm = build_arm("real", split.train_cases, split.test_cases, cases, {}, seed=0)
    fn = make_batch_fn(arm.items, SEG)
    a = fn(0, np.random.default_rng([1, 0, 0, 5]))
    b = make_batch_fn(arm.items, SEG)(0, np.random.default_rng([1, 0, 0, 5]))
    assert a["image"].shape == (SEG.batch_size, 1, 16, 16, 16) and a["image"].dtype == torch.float32
    assert a["label"].dtype == torch.int64
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["label"], b["label"])


def test_target_mismatch_is_refused(tmp_path, cases, split):
    arm = build_arm("real", split.train_cases, split.test_cases, cases, {}, seed=0)
    wall = SegmentationConfig(**{**SEG.__dict__, "target": "cavity_wall"})
    with pytest.raises(ConfigError, match="segmentation.target"):
        train_arm(arm, {}, wall, TRAIN, out_dir=tmp_path, seed=0, split=0)


def test_load_segmenter_refuses_missing_or_mismatched_weights(tmp_path, cases, split):
    from benchmark.errors import CheckpointError
    from benchmark.segmentation.model import Segmenter, save_segmenter

    with pytest.raises(CheckpointError, match="segmenter.pt: no trained segmenter here"):
        load_segmenter(tmp_path, SEG)
    save_segmenter(Segmenter(SEG), tmp_path)
    wider = SegmentationConfig(**{**SEG.__dict__, "channels": (8, 8, 8, 8, 8)})
    with pytest.raises(CheckpointError, match="does not match segmentation.channels"):
        load_segmenter(tmp_path, wider)
    (tmp_path / "segmenter.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_segmenter(tmp_path, SEG)


def test_budgets_give_each_arm_its_steps(tmp_path, cases, split):
    from dataclasses import replace

    epochs = replace(SEG, epochs=2, budget="epochs")
    assert budget_steps(epochs, n_real=6, n_volumes=9) == 10  # ceil(9 / 2) x 2: the arm's own volumes
    assert budget_steps(replace(SEG, epochs=2), n_real=6, n_volumes=9) == 6  # budget steps: the real arm's epochs
    assert budget_steps(SEG, n_real=6, n_volumes=9) == SEG.steps
    with pytest.raises(ConfigError, match=r"segmentation\.epochs: 0 must be >= 1"):
        SegmentationConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"segmentation\.budget: epochs needs segmentation\.epochs"):
        SegmentationConfig(budget="epochs")
    with pytest.raises(ConfigError, match=r"segmentation\.arms: real@matched is the compute-matched control"):
        SegmentationConfig(arms=("real", "real@matched"))
    arm = build_arm("real+augmented", split.train_cases, split.test_cases, cases, {}, ratio=0.5, seed=0)
    test = {c: cases[c] for c in split.test_cases}
    train_arm(arm, test, replace(epochs, epochs=1), TRAIN, out_dir=tmp_path, seed=3, split=0)
    record = json.loads((tmp_path / "arm.json").read_text())
    assert record["n_real"] + record["n_augmented"] == 9 and record["steps"] == 5  # one pass of 9 volumes, batch 2
    assert (record["budget"], record["budget_volumes"]) == ("epochs", 9)
