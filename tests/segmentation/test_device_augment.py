"""``segmentation.augment.device``: the CPU path keeps today's batches; the device path draws the same augmentations
(checked here with CPU tensors); ``cuda`` without a usable GPU is a one-line error naming the key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmark.config import AugmentConfig, SegmentationConfig
from benchmark.errors import ConfigError
from benchmark.segmentation.arms import build_arm
from benchmark.segmentation.augment import DeviceAugment, augment_pair, build_augment, check_augment_device
from benchmark.segmentation.train import fit_segmenter, make_batch_fn
from benchmark.tracking.tracker import NullTracker

AUG = AugmentConfig(flip=0.5, affine=0.5, elastic=0.5, elastic_magnitude=(2.0, 4.0), noise=0.5, blur=0.5, gamma=0.5,
                    bias_field=0.5)  # fmt: skip
SEG = SegmentationConfig(batch_size=2, patch=(12, 12, 12), augment=AUG)


def _rng(step: int) -> np.random.Generator:
    return np.random.default_rng([3, 0, 0, step])


def test_cpu_path_builds_todays_batches(cases, split):
    items = build_arm("real", split.train_cases, split.test_cases, cases, {}, seed=0).items
    batch = make_batch_fn(items, SEG)(4, _rng(4))
    # today's batch_fn, written out: item indices first, then one seed per item through the CPU pipeline
    rng, transform = _rng(4), build_augment(AUG, (12, 12, 12))
    pairs = [
        augment_pair(transform, items[int(i)].image, items[int(i)].target, rng)
        for i in rng.integers(len(items), size=2)
    ]
    assert set(batch) == {"image", "label"}
    assert torch.equal(batch["image"], torch.from_numpy(np.stack([p[0] for p in pairs])[:, None]))
    assert torch.equal(batch["label"], torch.from_numpy(np.stack([p[1] for p in pairs])[:, None]))


def test_device_path_draws_the_same_augmentations(cases, split):
    items = build_arm("real", split.train_cases, split.test_cases, cases, {}, seed=0).items
    on_device = dataclasses.replace(SEG, augment=dataclasses.replace(AUG, device="cuda"))
    for step in (0, 1):
        raw = make_batch_fn(items, on_device)(step, _rng(step))
        assert raw["image"].shape == (2, 1, 16, 16, 16) and raw["augment_seed"].shape == (2,)
        # DeviceAugment on CPU tensors runs the same transforms with the same seeds as the loader's CPU pipeline
        got = DeviceAugment(on_device)(raw, torch.device("cpu"))
        want = make_batch_fn(items, SEG)(step, _rng(step))
        assert got["label"].dtype == torch.int64 and torch.equal(got["label"], want["label"])
        torch.testing.assert_close(got["image"], want["image"], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_augmentation_without_cuda_is_a_one_line_error(tmp_path, cases, split):
    cfg = dataclasses.replace(AUG, device="cuda")
    with pytest.raises(ConfigError, match=r"^segmentation\.augment\.device: cuda, but no GPU is usable") as err:
        check_augment_device(cfg, None)
    assert "\n" not in str(err.value)
    check_augment_device(AUG, torch.device("cpu"))  # cpu: nothing to check
    arm = build_arm("real", split.train_cases, split.test_cases, cases, {}, seed=0)
    seg = dataclasses.replace(SEG, augment=cfg)
    from benchmark.config import TrainConfig

    with pytest.raises(ConfigError, match=r"^segmentation\.augment\.device: cuda"):  # refused before any step
        fit_segmenter(arm, seg, TrainConfig(), tmp_path, 0, NullTracker(), steps=2)
    assert not (tmp_path / "checkpoints").exists()
