"""The segmenter's training augmentations (the paper's list), built from MONAI dictionary transforms.

Spatial transforms (flips, affine, elastic) move the image and the label together, the label with nearest
interpolation so it keeps its integer values; intensity transforms (Gaussian noise, blur, gamma, bias field)
touch the image only. Every transform draws from a random state that is re-seeded from the engine's numpy
generator for each batch, so a batch is a pure function of the training step.

``segmentation.augment.device: cuda`` moves the pipeline onto the GPU: the loader then hands over the drawn volumes
with one seed per item, and ``DeviceAugment`` runs the same MONAI transforms, seeded the same way, on the device's
tensors in the training process (the same draws as on the CPU; only the arithmetic is the GPU's). MONAI still draws
the Gaussian noise and builds the bias field with numpy, on the training process's CPU, before moving them over.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
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
from monai.utils import convert_to_tensor

from benchmark.config import AugmentConfig, SegmentationConfig
from benchmark.errors import ConfigError

KEYS = ("image", "label")
AUGMENT_MAX_SEED = 2**31 - 1  # exclusive bound of the one seed drawn per item


def build_augment(
    cfg: AugmentConfig, patch: tuple[int, int, int] | None = None, device: torch.device | None = None
) -> Compose:
    """The augmentation pipeline for ``{"image": (1,X,Y,Z), "label": (1,X,Y,Z)}`` dictionaries.

    Args:
        cfg: probabilities and ranges of each augmentation; a probability of 0 leaves that transform out.
        patch: when given, a random crop of this size comes first (patch-wise training).
        device: where the affine and elastic transforms build their grids (None: MONAI's default, the CPU path);
            ``DeviceAugment`` passes the GPU its tensors live on.

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
                device=device,
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
                device=device,
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
    transform.set_random_state(seed=int(rng.integers(AUGMENT_MAX_SEED)))
    data = {"image": np.asarray(image, np.float32)[None], "label": np.asarray(label)[None].astype(np.float32)}
    out = transform(data)
    img = np.asarray(out["image"], dtype=np.float32)[0]
    lab = np.rint(np.asarray(out["label"], dtype=np.float32)[0]).astype(np.int64)
    return img, lab


def patch_for(cfg: SegmentationConfig, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The pipeline's random crop on volumes of ``shape``: ``segmentation.patch`` where it is smaller, else None."""
    if cfg.patch is None or not any(p < s for p, s in zip(cfg.patch, shape, strict=True)):
        return None
    return cfg.patch


def check_augment_device(cfg: AugmentConfig, device: torch.device | None) -> None:
    """Refuse ``segmentation.augment.device: cuda`` where the job cannot train on a usable GPU (no silent fallback).

    Args:
        cfg: the augmentations (``device``).
        device: the job's training device, or None for the engine's choice.
    """
    if cfg.device != "cuda":
        return
    from benchmark.engine.device import cuda_state

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        raise ConfigError(f"segmentation.augment.device: cuda, but no GPU is usable here ({cuda_state()}); set cpu")
    if device is not None and torch.device(device).type != "cuda":
        raise ConfigError(f"segmentation.augment.device: cuda, but this job trains on {device}; set cpu")


class DeviceAugment:
    """The augmentations on the training device, for the loader's un-augmented batches (``augment.device: cuda``).

    Args:
        cfg: the ``segmentation`` section (augmentations and patch).
    """

    def __init__(self, cfg: SegmentationConfig):
        self.cfg = cfg
        self.built: dict[tuple, Compose] = {}

    def __call__(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """``{"image", "label", "augment_seed"}`` (B,1,X,Y,Z) volumes and (B,) seeds -> the augmented batch.

        Args:
            batch: as ``make_batch_fn`` builds it with ``augment.device: cuda``.
            device: the training device (``cuda``; the CPU only where a test compares against the CPU path).
        """
        image, label = batch["image"].to(device), batch["label"].to(device)
        key = (torch.device(device), tuple(image.shape[2:]))
        if key not in self.built:
            self.built[key] = build_augment(self.cfg.augment, patch_for(self.cfg, key[1]), key[0])
        transform, images, labels = self.built[key], [], []
        for i, seed in enumerate(batch["augment_seed"].tolist()):
            transform.set_random_state(seed=int(seed))
            out = transform({"image": image[i].float(), "label": label[i].float()})
            images.append(convert_to_tensor(out["image"], track_meta=False).float())
            labels.append(torch.round(convert_to_tensor(out["label"], track_meta=False)).long())
        return {"image": torch.stack(images), "label": torch.stack(labels)}


def control_config(cfg: AugmentConfig) -> AugmentConfig:
    """Settings for the materialised ``real+augmented`` control: every transform on at least half the time.

    The affine is always applied so that no control volume is a plain copy of its real source.
    """
    probs = {f: max(getattr(cfg, f), 0.5) for f in ("flip", "noise", "blur", "gamma", "bias_field")}
    return dataclasses.replace(cfg, affine=1.0, **probs)
