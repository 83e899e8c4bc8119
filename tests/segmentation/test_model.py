"""The U-Net wrapper, class weights and the augmentations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmark.config import AugmentConfig, SegmentationConfig
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.augment import augment_pair, build_augment
from benchmark.segmentation.model import Segmenter, class_weights, make_target

TINY = SegmentationConfig(channels=(4, 8, 8, 8, 8), strides=(2, 2, 2, 1), num_res_units=1)
NO_AUG = AugmentConfig(flip=0, affine=0, elastic=0, noise=0, blur=0, gamma=0, bias_field=0)


def test_class_weights_inverse_to_counts():
    a = np.array([0] * 6 + [1] * 2)  # counts over both targets: 9 background, 3 cavity
    b = np.array([0, 0, 0, 1])
    w = class_weights([a, b], 2)
    assert w[1] / w[0] == pytest.approx(3.0)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w, [0.5, 1.5])
    w3 = class_weights([np.array([0] * 8 + [1] * 4 + [2] * 2)], 3)
    np.testing.assert_allclose(w3 / w3[0], [1, 2, 4], rtol=1e-6)
    with pytest.raises(DataError, match=r"class\(es\) \[2\] have no voxels"):
        class_weights([a], 3)
    np.testing.assert_allclose(class_weights([np.array([0] * 9 + [1])], 2, "sqrt_inverse"), [0.5, 1.5])
    np.testing.assert_allclose(class_weights([a, b], 2, "none"), [1.0, 1.0])
    with pytest.raises(ConfigError, match="segmentation.class_weighting"):
        class_weights([a], 2, "log")


def test_make_target():
    label = np.array([0, 1, 2, 3, 4])
    assert make_target(label, "cavity").tolist() == [0, 1, 0, 0, 0]
    assert make_target(label, "cavity_wall").tolist() == [0, 1, 2, 0, 0]


def _pair(shape=(16, 16, 12)):
    rng = np.random.default_rng(0)
    image = rng.random(shape, dtype=np.float32)
    label = (image > 0.7).astype(np.int64)
    label[image > 0.9] = 2
    return image, label


def test_augmentation_is_a_function_of_the_rng_seed():
    image, label = _pair()
    cfg = AugmentConfig(flip=0.5, affine=1.0, elastic=0.5, noise=1.0, blur=0.5, gamma=1.0, bias_field=1.0)
    t = build_augment(cfg)
    x1, y1 = augment_pair(t, image, label, np.random.default_rng(5))
    x2, y2 = augment_pair(build_augment(cfg), image, label, np.random.default_rng(5))
    x3, _ = augment_pair(t, image, label, np.random.default_rng(6))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.dtype == np.float32 and y1.dtype == np.int64 and x1.shape == image.shape
    assert set(np.unique(y1)) <= {0, 1, 2}  # nearest interpolation keeps label values


def test_flips_move_image_and_label_together():
    image, label = _pair()
    t = build_augment(dataclasses.replace(NO_AUG, flip=1.0))  # every axis flipped
    x, y = augment_pair(t, image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(x, image[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(y, label[::-1, ::-1, ::-1])


def test_intensity_transforms_leave_the_label_alone():
    image, label = _pair()
    cfg = dataclasses.replace(NO_AUG, noise=1.0, blur=1.0, gamma=1.0, bias_field=1.0)
    x, y = augment_pair(build_augment(cfg), image, label, np.random.default_rng(1))
    np.testing.assert_array_equal(y, label)
    assert not np.allclose(x, image)


def test_patch_crop_is_aligned():
    image = np.arange(16 * 16 * 12, dtype=np.float32).reshape(16, 16, 12)
    label = np.arange(16 * 16 * 12).reshape(16, 16, 12) % 3
    x, y = augment_pair(build_augment(NO_AUG, patch=(8, 8, 8)), image, label, np.random.default_rng(2))
    assert x.shape == (8, 8, 8)
    # the crop is the same window of image and label: label == image index mod 3
    np.testing.assert_array_equal(y, x.astype(np.int64) % 3)


def test_segmenter_shapes_padding_and_sliding_window():
    torch.manual_seed(0)
    seg = Segmenter(TINY, weights=[0.5, 1.5])
    (stage,) = seg.stages()
    assert stage.networks == ("unet",) and stage.steps == TINY.steps
    x = torch.rand(2, 1, 16, 16, 12)  # 12 is not a multiple of the total stride 8
    assert seg.networks["unet"](x).shape == (2, 2, 16, 16, 12)
    vol = np.random.default_rng(0).random((20, 18, 12), dtype=np.float32)
    whole = seg.predict(vol)
    assert whole.shape == vol.shape and whole.dtype == np.uint8
    assert seg.networks["unet"].training  # predict restores the mode
    sw = Segmenter(dataclasses.replace(TINY, patch=(16, 16, 16)))
    assert sw.predict(vol).shape == vol.shape
    opt, sched = seg.make_optimizer("unet", list(seg.networks["unet"].parameters()), 10)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == TINY.lr and sched is None
    with pytest.raises(ConfigError, match="segmentation.strides"):
        Segmenter(dataclasses.replace(TINY, strides=(2, 2)))
    wall = Segmenter(dataclasses.replace(TINY, target="cavity_wall"))
    assert wall.networks["unet"](x).shape[1] == 3
