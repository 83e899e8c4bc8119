"""The segmenter's training augmentations (the paper's list), built from MONAI dictionary transforms.

Spatial transforms (flips, affine, elastic) move the image and the label together, the label with nearest
interpolation so it keeps its integer values; intensity transforms (Gaussian noise, blur, gamma, bias field)
touch the image only. Every transform draws from a random state that is re-seeded from the engine's numpy
generator for each batch, so a batch is a pure function of the training step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandSpatialCropd,
)

from benchmark.config import AugmentConfig

KEYS = ("image", "label")
_MAX_SEED = 2**31 - 1


def build_augment(cfg: AugmentConfig, patch: tuple[int, int, int] | None = None) -> Compose:
    """The augmentation pipeline for ``{"image": (1,X,Y,Z), "label": (1,X,Y,Z)}`` dictionaries.

    Args:
        cfg: probabilities and ranges of each augmentation; a probability of 0 leaves that transform out.
        patch: when given, a random crop of this size comes first (patch-wise training).

    Returns:
        A MONAI ``Compose``; seed it with ``set_random_state`` (see ``augment_pair``) before each use.
    """
    rot = math.radians(cfg.rotate_deg)
    transforms: list = []
    if patch is not None:
        transforms.append(RandSpatialCropd(keys=KEYS, roi_size=patch, random_size=False))
    if cfg.flip > 0:
        transforms += [RandFlipd(keys=KEYS, prob=cfg.flip, spatial_axis=axis) for axis in range(3)]
    if cfg.affine > 0:
        transforms.append(
            RandAffined(
                keys=KEYS,
                prob=cfg.affine,
                rotate_range=(rot, rot, rot),
                scale_range=(cfg.scale,) * 3,
                translate_range=(cfg.translate_vox,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            )
        )
    if cfg.elastic > 0:
        transforms.append(
            Rand3DElasticd(
                keys=KEYS,
                prob=cfg.elastic,
                sigma_range=cfg.elastic_sigma,
                magnitude_range=cfg.elastic_magnitude,
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            )
        )
    transforms += _intensity(cfg)
    return Compose(transforms)


def _intensity(cfg: AugmentConfig) -> list:
    """Image-only transforms, in the order noise, blur, gamma, bias field."""
    out: list = []
    if cfg.noise > 0:
        out.append(RandGaussianNoised(keys="image", prob=cfg.noise, std=cfg.noise_std))
    if cfg.blur > 0:
        s = cfg.blur_sigma
        out.append(RandGaussianSmoothd(keys="image", prob=cfg.blur, sigma_x=s, sigma_y=s, sigma_z=s))
    if cfg.gamma > 0:
        out.append(RandAdjustContrastd(keys="image", prob=cfg.gamma, gamma=cfg.gamma_range, retain_stats=True))
    if cfg.bias_field > 0:
        out.append(RandBiasFieldd(keys="image", prob=cfg.bias_field, coeff_range=cfg.bias_coeff))
    return out


def augment_pair(
    transform: Compose, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one image/label pair with a seed drawn from ``rng``.

    Args:
        transform: a pipeline from ``build_augment``.
        image: (X, Y, Z) float image.
        label: (X, Y, Z) integer label map on the same grid.
        rng: the caller's generator; exactly one integer is drawn from it.

    Returns:
        The augmented ``(image float32, label int64)`` as (X', Y', Z') numpy arrays (X' = patch when cropping).
    """
    transform.set_random_state(seed=int(rng.integers(_MAX_SEED)))
    data = {"image": np.asarray(image, np.float32)[None], "label": np.asarray(label)[None].astype(np.float32)}
    out = transform(data)
    img = np.asarray(out["image"], dtype=np.float32)[0]
    lab = np.rint(np.asarray(out["label"], dtype=np.float32)[0]).astype(np.int64)
    return img, lab


def control_config(cfg: AugmentConfig) -> AugmentConfig:
    """Settings for the materialised ``real+augmented`` control: every transform on at least half the time.

    The affine is always applied so that no control volume is a plain copy of its real source.
    """
    probs = {f: max(getattr(cfg, f), 0.5) for f in ("flip", "noise", "blur", "gamma", "bias_field")}
    return dataclasses.replace(cfg, affine=1.0, **probs)
