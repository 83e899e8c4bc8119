"""The utility study's 3D U-Net as a ``Trainable`` for the one engine.

MONAI ``UNet`` with five levels, residual units, instance norm and dropout; loss soft Dice + cross-entropy
(MONAI ``DiceCELoss``) with class weights inversely proportional to the voxel counts of the arm's training
targets. In MONAI 1.6 the ``weight`` of ``DiceCELoss`` rescales both the cross-entropy and the per-class Dice
terms. Inputs of any size are padded (edge values) to a multiple of the U-Net's total stride and the output is
cropped back, so a 48x48x24 study grid needs no special strides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.networks.nets.unet import CheckpointUNet
from torch import nn

from benchmark.atomic import atomic_path
from benchmark.config import SegmentationConfig
from benchmark.engine.contract import Stage, StepContext
from benchmark.errors import CheckpointError, ConfigError, DataError
from benchmark.segmentation.augment import DeviceAugment

TARGET_CLASSES = {"cavity": 2, "cavity_wall": 3}


def make_target(label: np.ndarray, target: str) -> np.ndarray:
    """Segmentation target of an expert label map (0 background, 1 cavity, 2 wall).

    Args:
        label: (X, Y, Z) integer label map; composite context labels (>= 3) count as background.
        target: ``"cavity"`` -> {0, 1} (label == 1); ``"cavity_wall"`` -> {0, 1, 2}.

    Returns:
        (X, Y, Z) uint8 target.
    """
    label = np.asarray(label)
    if target == "cavity":
        return (label == 1).astype(np.uint8)
    if target == "cavity_wall":
        return np.where(label <= 2, label, 0).astype(np.uint8)
    raise ConfigError(f"segmentation.target: {target!r} is not one of the allowed choices: 'cavity', 'cavity_wall'")


def class_weights(targets: Iterable[np.ndarray], num_classes: int, mode: str = "inverse") -> np.ndarray:
    """Class weights from the voxel counts of the arm's training targets, normalised to mean 1.

    Args:
        targets: the arm's training targets (values 0..num_classes-1).
        num_classes: number of classes of the target.
        mode: ``"inverse"`` (the paper: ``w_c`` proportional to ``1 / n_c``), ``"sqrt_inverse"``
            (``1 / sqrt(n_c)``, a milder weighting) or ``"none"`` (all 1).

    Returns:
        (num_classes,) float32 weights, e.g. ``w_c = (1 / n_c) / mean_k(1 / n_k)`` for ``"inverse"``.
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for t in targets:
        counts += np.bincount(np.asarray(t, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]
    if np.any(counts == 0):
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise DataError("arm training targets", f"class(es) {missing} have no voxels; cannot weight the loss")
    powers = {"inverse": 1.0, "sqrt_inverse": 0.5, "none": 0.0}
    if mode not in powers:
        raise ConfigError(f"segmentation.class_weighting: {mode!r} is not one of {', '.join(map(repr, powers))}")
    inv = counts ** -powers[mode]
    return (inv / inv.mean()).astype(np.float32)


class PaddedUNet(nn.Module):
    """A MONAI UNet that pads its input to a multiple of the total stride and crops the output back."""

    def __init__(self, unet: UNet, multiple: int):
        super().__init__()
        self.unet = unet
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pads = [(-s) % self.multiple for s in size]
        if not any(pads):
            return self.unet(x)
        # F.pad takes (last-dim-before, last-dim-after, ...); pad only after, then crop the same corner
        flat = [v for p in reversed(pads) for v in (0, p)]
        out = self.unet(F.pad(x, flat, mode="replicate"))
        return out[..., : size[0], : size[1], : size[2]]


def build_unet(cfg: SegmentationConfig) -> PaddedUNet:
    """The configured U-Net (input 1 channel, output one channel per target class)."""
    if len(cfg.strides) != len(cfg.channels) - 1:
        raise ConfigError(
            f"segmentation.strides: {len(cfg.strides)} strides for {len(cfg.channels)} channel levels; "
            "need one fewer stride than levels"
        )
    unet = (CheckpointUNet if cfg.checkpointing else UNet)(
        spatial_dims=3,
        in_channels=1,
        out_channels=TARGET_CLASSES[cfg.target],
        channels=tuple(cfg.channels),
        strides=tuple(cfg.strides),
        num_res_units=cfg.num_res_units,
        norm="INSTANCE",
        dropout=cfg.dropout,
    )
    return PaddedUNet(unet, math.prod(cfg.strides))


class Segmenter:
    """The segmentation U-Net, trained by ``benchmark.engine.fit`` (one network ``"unet"``, one stage).

    Args:
        cfg: the ``segmentation`` section.
        weights: class weights of the loss (see ``class_weights``); None for unweighted.
    """

    def __init__(self, cfg: SegmentationConfig, weights: Sequence[float] | None = None):
        self.cfg = cfg
        self.num_classes = TARGET_CLASSES[cfg.target]
        self.networks: dict[str, nn.Module] = {"unet": build_unet(cfg)}
        weight = None
        if weights is not None:
            weight = torch.as_tensor(np.asarray(weights, dtype=np.float32))
            if weight.shape != (self.num_classes,):
                raise ConfigError(f"segmentation.target: {self.num_classes} classes but {len(weight)} class weights")
        self.weights = weight
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)
        # augment.device: cuda: the loader's batches arrive un-augmented and are augmented here, on the device
        self.device_augment = DeviceAugment(cfg) if cfg.augment.device == "cuda" else None

    def stages(self) -> list[Stage]:
        return [Stage("segmentation", ("unet",), self.cfg.steps)]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple[Any, Any]:
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = None
        if self.cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
        return opt, sched

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net = ctx.module("unet")
        if self.device_augment is not None:
            batch = self.device_augment(batch, ctx.device)
        logits = net(batch["image"].to(ctx.device))
        loss = self.loss(logits, batch["label"].to(ctx.device))
        ctx.backward("unet", loss)
        ctx.optimizer_step("unet")
        return {"loss": loss.detach()}

    def state_extra(self) -> dict[str, Any]:
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        return None

    @torch.no_grad()
    def predict(self, volume: np.ndarray, device: torch.device | None = None) -> np.ndarray:
        """Label map of one volume (argmax of the softmax), in eval mode.

        Args:
            volume: (X, Y, Z) float image.
            device: where to run; default the network's device.

        Returns:
            (X, Y, Z) uint8 labels (0..num_classes-1). Uses sliding-window inference when ``cfg.patch`` is set
            and smaller than the volume, else one whole-volume pass.
        """
        net = self.networks["unet"]
        device = device or next(net.parameters()).device
        was_training = net.training
        net.eval()
        try:
            x = torch.as_tensor(np.asarray(volume, np.float32))[None, None].to(device)
            patch = self.cfg.patch
            if patch is not None and any(p < s for p, s in zip(patch, x.shape[2:], strict=True)):
                logits = sliding_window_inference(x, roi_size=patch, sw_batch_size=2, predictor=net, overlap=0.25)
            else:
                logits = net(x)
            return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        finally:
            net.train(was_training)


WEIGHTS_FILE = "segmenter.pt"
_FORMAT = "lge-synthbench-segmenter"


def save_segmenter(model: Segmenter, folder: str | Path) -> Path:
    """Write the trained U-Net's weights to ``<folder>/segmenter.pt`` atomically (engine-independent).

    Args:
        model: the trained segmenter.
        folder: the arm's job folder.

    Returns:
        The written file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    state = {k: v.detach().cpu() for k, v in model.networks["unet"].state_dict().items()}
    with atomic_path(target) as tmp:
        torch.save({"format": _FORMAT, "target": model.cfg.target, "state_dict": state}, tmp)
    return target


def load_segmenter(folder: str | Path, cfg: SegmentationConfig, device: torch.device | None = None) -> Segmenter:
    """A trained segmenter for inference (e.g. the ``real`` arm's U-Net behind mask fidelity).

    Args:
        folder: an arm's job folder holding ``segmenter.pt`` (written by ``train_arm``).
        cfg: the ``segmentation`` section it was trained with (network shape and target must match).
        device: where to put the network (default CPU).

    Returns:
        The ``Segmenter`` in eval mode. A missing, foreign or mismatched file raises ``CheckpointError``.
    """
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(path, "no trained segmenter here; train the arm first (launchers/train_segmenter.py)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise CheckpointError(path, f"cannot be read ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(path, f"is not a {_FORMAT} file")
    if payload.get("target") != cfg.target:
        raise CheckpointError(path, f"was trained for target {payload.get('target')!r}, config asks {cfg.target!r}")
    model = Segmenter(cfg)
    try:
        model.networks["unet"].load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(path, f"does not match segmentation.channels/strides ({first[:160]})") from None
    net = model.networks["unet"].to(device or torch.device("cpu"))
    net.eval()
    return model
