"""Pieces the adversarial generators share: label encoding, shape checks, optimizers, PatchGAN discriminators and
their losses. ``pix2pix3d``, ``spade_gan`` and ``spade_ldm`` import them from here, never from each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

from benchmark.errors import ConfigError, DataError


def one_hot_label(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,1,X,Y,Z) integer label map -> (B,num_classes,X,Y,Z) float one-hot; values outside 0..num_classes-1 raise.

    Args:
        label: integer label map.
        num_classes: the study's number of classes (background, cavity, wall and context clusters).

    Returns:
        The float32 one-hot map.
    """
    if label.ndim != 5 or label.shape[1] != 1:
        raise DataError("label map", f"expected shape (B, 1, X, Y, Z), got {tuple(label.shape)}")
    if label.is_floating_point():
        label = label.round()
    label = label.long()
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= num_classes:
        raise DataError("label map", f"values {lo}..{hi} are outside the configured classes 0..{num_classes - 1}")
    return F.one_hot(label[:, 0], num_classes).permute(0, 4, 1, 2, 3).float()


def check_shape(shape: tuple[int, ...], levels: int, key: str) -> None:
    """Raise ConfigError unless every axis of ``shape`` is divisible by ``2 ** levels``.

    Args:
        shape: the study's (X, Y, Z).
        levels: 2x downsamplings of the network.
        key: the config key named in the message.
    """
    if any(s % (2**levels) for s in shape):
        raise ConfigError(
            f"{key}: {levels} downsampling levels need every axis of {tuple(shape)} divisible by {2**levels}"
        )


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """D loss on raw patch logits: hinge or least squares (targets 1 for real, 0 for fake).

    Args:
        real: logits for real images.
        fake: logits for generated images.
        kind: ``"hinge"``; any other value is least squares.
    """
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def generator_adv_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """G's adversarial loss on the discriminator's logits for generated images.

    Args:
        fake: logits for generated images.
        kind: ``"hinge"``; any other value is least squares.
    """
    if kind == "hinge":
        return -fake.mean()
    return 0.5 * (fake - 1).pow(2).mean()


def make_adam(
    params: list[nn.Parameter], lr: float, betas: tuple[float, float], total_steps: int, *, cosine: bool = True
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Adam, with a cosine learning-rate decay over ``total_steps`` or a constant rate.

    Args:
        params: the parameters to optimize.
        lr: (initial) learning rate.
        betas: Adam's betas.
        total_steps: steps of the stage (the cosine's period).
        cosine: False keeps the rate constant and returns no scheduler.

    Returns:
        ``(optimizer, scheduler or None)`` as ``Trainable.make_optimizer`` returns them.
    """
    opt = torch.optim.Adam(params, lr=lr, betas=betas)
    if not cosine:
        return opt, None
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))


def patch_discriminator(
    in_channels: int,
    channels: int,
    layers: int,
    kernel: int,
    norm: str,
    *,
    padding: int | None = None,
    last_kernel: int | None = None,
) -> PatchDiscriminator:
    """MONAI's 3D PatchGAN discriminator (LeakyReLU 0.2, one output channel).

    Args:
        in_channels: input channels (image plus conditioning).
        channels: width of the first layer; doubled per layer.
        layers: strided layers.
        kernel: kernel size of every layer.
        norm: MONAI norm name, e.g. ``"INSTANCE"`` or ``"BATCH"``.
        padding: None pads by ``(kernel - 1) // 2``, so an odd kernel keeps small volumes alive.
        last_kernel: kernel of the last layer; None uses ``kernel``.
    """
    return PatchDiscriminator(
        spatial_dims=3,
        channels=channels,
        in_channels=in_channels,
        out_channels=1,
        num_layers_d=layers,
        kernel_size=kernel,
        padding=(kernel - 1) // 2 if padding is None else padding,
        norm=norm,
        last_conv_kernel_size=kernel if last_kernel is None else last_kernel,
    )
