"""3D Pix2Pix: a label-map-to-image U-Net trained against a conditional PatchGAN.

Generator: MONAI ``BasicUNet`` (five encoder levels with skip connections, four down/up-samplings) with
``upsample="nontrainable"``, i.e. trilinear interpolation plus convolution instead of transposed convolutions
(no checkerboard artefacts). Its single input channel is the label map scaled to [0, 1]
(``label / (num_classes - 1)``). Discriminator: MONAI ``PatchDiscriminator`` on the 2-channel
(label map, image) pair, LeakyReLU and batch norm. Loss: adversarial + ``lambda_l1`` x voxel-wise L1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import BasicUNet
from torch import nn

from benchmark.engine.contract import Stage, StepContext
from benchmark.errors import ConfigError
from benchmark.generators.base import Generator, GeneratorConfig
from benchmark.generators.gan_common import make_adam, patch_discriminator

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


@dataclass(kw_only=True)
class Pix2PixConfig(GeneratorConfig):
    """Settings of ``pix2pix3d`` (YAML section ``generators.pix2pix3d``); defaults are the CPU study's.

    The paper's training settings are the defaults here except ``epochs=400`` (``GeneratorConfig.epochs``);
    ``configs/paper.yaml`` sets them together with full network widths.
    """

    deterministic_sampling: ClassVar[bool] = True  # no noise input: a label map always gives the same volume
    features: tuple[int, int, int, int, int, int] = (16, 16, 32, 64, 128, 16)  # 5 encoder levels + last decoder
    g_norm: Literal["instance", "batch"] = "instance"
    g_dropout: float = 0.0
    d_channels: int = 16  # first PatchGAN layer; doubled per layer
    d_layers: int = 3
    d_kernel: int = 4
    d_last_kernel: int = 4  # 1 keeps a PatchGAN valid on shallow volumes (depth 16)
    gan_loss: Literal["bce", "least_squares", "hinge"] = "bce"
    lambda_l1: float = 100.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int = 300  # optimizer steps (used when ``epochs`` is None)

    @classmethod
    def tiny(cls) -> Pix2PixConfig:
        """A few-thousand-parameter variant for tests on 16^3-32^3 volumes."""
        return cls(features=(4, 4, 8, 8, 16, 4), d_channels=4, d_layers=2, steps=2)


def _patch_output_size(size: int, cfg: Pix2PixConfig) -> int:
    # initial conv and all but the last layer halve (kernel k, padding 1); the last layer and head keep stride 1
    for stride in [2] * cfg.d_layers + [1]:
        size = (size + 2 - cfg.d_kernel) // stride + 1
    return size + 2 * ((cfg.d_last_kernel - 1) // 2) - cfg.d_last_kernel + 1


class Pix2Pix3D(Generator):
    """The ``pix2pix3d`` generator."""

    def __init__(self, cfg: Pix2PixConfig, num_classes: int, shape: tuple[int, int, int]):
        if num_classes < 2:
            raise ConfigError(f"num_classes: pix2pix3d needs at least 2 label values, got {num_classes}")
        small = [s for s in shape if _patch_output_size(s, cfg) < 1]
        if small:
            raise ConfigError(
                f"generators.pix2pix3d.d_layers: a {cfg.d_layers}-layer PatchGAN has no output on an axis of "
                f"{small[0]} voxels; lower d_layers or set d_last_kernel=1"
            )
        bottleneck = [s // 16 for s in shape]
        if min(bottleneck) < 1 or (cfg.g_norm == "instance" and bottleneck[0] * bottleneck[1] * bottleneck[2] < 2):
            raise ConfigError(
                f"shape: {tuple(shape)} is too small for the 5-level U-Net of pix2pix3d (four 2x poolings leave "
                f"{tuple(bottleneck)} voxels; instance norm needs at least 2): use axes of at least 16 and not all 16"
            )
        self.cfg, self.num_classes, self.shape = cfg, num_classes, tuple(shape)
        generator = BasicUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            features=tuple(cfg.features),
            norm=(cfg.g_norm, {"affine": True}),
            dropout=cfg.g_dropout,
            upsample="nontrainable",
        )
        # MONAI's default padding of 1 for the even kernels of the original PatchGAN
        discriminator = patch_discriminator(
            2, cfg.d_channels, cfg.d_layers, cfg.d_kernel, "BATCH", padding=1, last_kernel=cfg.d_last_kernel
        )
        self.networks: dict[str, nn.Module] = {GENERATOR: generator, DISCRIMINATOR: discriminator}
        self.adversarial = PatchAdversarialLoss(criterion=cfg.gan_loss)

    def stages(self) -> list[Stage]:
        return [Stage("gan", (GENERATOR, DISCRIMINATOR), self.cfg.steps)]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple[Any, Any]:
        return make_adam(params, self.cfg.lr, tuple(self.cfg.betas), total_steps, cosine=False)

    def encode_label(self, label: torch.Tensor) -> torch.Tensor:
        """(B,1,X,Y,Z) integer label map -> one float channel in [0, 1]."""
        return label.float() / (self.num_classes - 1)

    def _adv(self, logits: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
        # the sigmoid + BCE of MONAI's loss is not autocast-safe: evaluate it in float32
        with torch.autocast(logits.device.type, enabled=False):
            return self.adversarial(logits.float(), target_is_real=real, for_discriminator=for_discriminator)

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cond, real = self.encode_label(batch["label"]), batch["image"]
        gen, disc = ctx.module(GENERATOR), ctx.module(DISCRIMINATOR)
        fake = gen(cond)

        ctx.set_requires_grad(DISCRIMINATOR, True)
        d_real = disc(torch.cat([cond, real], dim=1))[-1]
        d_fake = disc(torch.cat([cond, fake.detach()], dim=1))[-1]
        loss_d = 0.5 * (self._adv(d_real, True, True) + self._adv(d_fake, False, True))
        ctx.backward(DISCRIMINATOR, loss_d)
        ctx.optimizer_step(DISCRIMINATOR)

        ctx.set_requires_grad(DISCRIMINATOR, False)  # the G update must not leave gradients in D
        g_adv = self._adv(disc(torch.cat([cond, fake], dim=1))[-1], True, False)
        g_l1 = F.l1_loss(fake.float(), real.float())
        loss_g = g_adv + self.cfg.lambda_l1 * g_l1
        ctx.backward(GENERATOR, loss_g)
        ctx.optimizer_step(GENERATOR)
        ctx.set_requires_grad(DISCRIMINATOR, True)
        return {"d": loss_d, "g_adv": g_adv, "g_l1": g_l1, "g": loss_g}

    def state_extra(self) -> dict[str, Any]:
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        pass

    @torch.no_grad()
    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B,1,X,Y,Z) float32 for label maps (B,1,X,Y,Z); deterministic, so ``generator`` is unused."""
        net = self.networks[GENERATOR]
        was_training = net.training
        net.eval()
        try:
            device = next(net.parameters()).device
            return net(self.encode_label(label.to(device))).float()
        finally:
            net.train(was_training)


def build(config: Pix2PixConfig, num_classes: int, shape: tuple[int, int, int]) -> Pix2Pix3D:
    """Build ``pix2pix3d`` for label maps with values ``0..num_classes-1`` on a study grid ``shape``.

    Args:
        config: the generator's settings.
        num_classes: number of label values (composite maps: k + 2).
        shape: the study's (X, Y, Z).

    Returns:
        The untrained ``Pix2Pix3D``.
    """
    return Pix2Pix3D(config, num_classes, shape)
