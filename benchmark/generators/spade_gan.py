"""SPADE-GAN: a VAE-GAN with a SPADE decoder (MONAI ``SPADENet``) and two conditional patch discriminators.

The encoder maps the real image to a Gaussian posterior over the style code z (KL-regularised towards N(0, I));
the decoder renders the one-hot label map, injected at every level through SPADE normalisation, from z. Two
PatchGAN discriminators with instance norm see (image, one-hot label) at full and at half resolution. Losses:
adversarial (hinge or least squares) + feature matching on the discriminators' features + KL + perceptual
(+ an optional voxel-wise L1). Each step updates D first, then G with D frozen. ``sample`` draws z from the prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import SPADENet
from torch import nn

from benchmark.engine.contract import Stage, StepContext
from benchmark.errors import ConfigError
from benchmark.generators.base import Generator, GeneratorConfig
from benchmark.generators.gan_common import (
    check_shape,
    discriminator_loss,
    generator_adv_loss,
    make_adam,
    one_hot_label,
    patch_discriminator,
)
from benchmark.generators.guidance import device_generator
from benchmark.generators.perceptual import PerceptualConfig, build_perceptual


@dataclass(kw_only=True)
class SpadeGanConfig(GeneratorConfig):
    """SPADE-GAN settings (section ``generators.spade_gan``); defaults are small CPU values."""

    channels: tuple[int, ...] = (8, 16, 32)  # encoder widths; one SPADE residual block and one 2x step each
    z_dim: int = 32
    spade_hidden: int = 16  # width of the SPADE blocks' label-map MLP
    # SPADENet shares one norm across blocks and its last block is as wide as the image (1 channel), so "group"
    # is group norm with a single group there and everywhere
    norm: Literal["group", "instance"] = "group"
    last_act: Literal["none", "tanh", "sigmoid"] = "none"
    upsampling: Literal["nearest", "trilinear"] = "nearest"  # the decoder's 2x steps (SPADENet upsampling_mode)
    d_channels: int = 16
    d_layers: int = 3  # strided layers of the full-resolution discriminator (the half-resolution one too)
    d_kernel: int = 3  # 3 keeps feature maps >= 2 voxels deep for volumes of depth 16
    # The CPU defaults below keep the discriminator slower than the generator (lr_d = lr_g / 10, least squares)
    # and add a voxel-wise L1 standing in for the perceptual loss, which is off without MedicalNet weights: with
    # the paper's hinge loss, lr_d = 2 lr_g and no L1, the discriminator wins within 200 steps (d loss ~0.01)
    # and the generated volumes stay noise (benchmarks/generator_learning.py). configs/paper.yaml restores them.
    gan_loss: Literal["hinge", "lsgan"] = "lsgan"
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adv_weight: float = 1.0
    fm_weight: float = 10.0
    kl_weight: float = 0.05
    l1_weight: float = 10.0
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    steps: int = 300  # optimizer steps (used when ``epochs`` is None)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("channels: at least one level is needed")
        if self.steps < 1:
            raise ConfigError(f"steps: must be >= 1, got {self.steps}")

    @classmethod
    def tiny(cls) -> SpadeGanConfig:
        """A very small network for 16^3-32^3 tests."""
        return cls(channels=(4, 8), z_dim=8, spade_hidden=4, d_channels=4, d_layers=2, steps=2)


# ---------------------------------------------------------------------------------------------------------
# Networks


class SpadeVaeGenerator(nn.Module):
    """MONAI SPADENet (VAE mode) with the reparameterisation noise passed in, so training uses the engine's RNG."""

    def __init__(self, cfg: SpadeGanConfig, num_classes: int, shape: tuple[int, int, int]):
        super().__init__()
        norm = ("GROUP", {"num_groups": 1, "affine": False}) if cfg.norm == "group" else "INSTANCE"
        last_act = {"none": None, "tanh": "TANH", "sigmoid": "SIGMOID"}[cfg.last_act]
        self.z_dim = cfg.z_dim
        self.net = SPADENet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            label_nc=num_classes,
            input_shape=list(shape),
            channels=list(cfg.channels),  # SPADENet reverses and extends the list it is given
            z_dim=cfg.z_dim,
            is_vae=True,
            spade_intermediate_channels=cfg.spade_hidden,
            norm=norm,
            last_act=last_act,
            upsampling_mode=cfg.upsampling,
        )

    def forward(
        self, seg: torch.Tensor, image: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.net.encoder(image)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.net.decode(seg, z), mu, logvar

    def decode(self, seg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(seg, z)


class TwoScaleDiscriminator(nn.Module):
    """Two PatchGAN discriminators: one on the input, one on the input average-pooled by 2 (as in pix2pixHD)."""

    def __init__(self, in_channels: int, channels: int, layers: int, kernel: int):
        super().__init__()
        self.full_res = patch_discriminator(in_channels, channels, layers, kernel, "INSTANCE")
        self.half_res = patch_discriminator(in_channels, channels, layers, kernel, "INSTANCE")

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per discriminator: intermediate features followed by the patch logits."""
        return [self.full_res(x), self.half_res(F.avg_pool3d(x, 2))]


# ---------------------------------------------------------------------------------------------------------
# The trainable


class SpadeGan(Generator):
    """SPADE VAE-GAN generator (see module docstring). Networks: ``generator`` and ``discriminator``."""

    def __init__(self, cfg: SpadeGanConfig, num_classes: int, shape: tuple[int, int, int]):
        check_shape(shape, len(cfg.channels), "generators.spade_gan.channels")
        self.cfg = cfg
        self.num_classes = num_classes
        self.shape = tuple(shape)
        self.networks: dict[str, nn.Module] = {
            "generator": SpadeVaeGenerator(cfg, num_classes, self.shape),
            "discriminator": TwoScaleDiscriminator(1 + num_classes, cfg.d_channels, cfg.d_layers, cfg.d_kernel),
        }
        self.perceptual = build_perceptual(cfg.perceptual, key="generators.spade_gan.perceptual")

    def tags(self) -> dict[str, str]:
        """Run tags to log (e.g. ``perceptual=off`` when no MedicalNet weights were given)."""
        return {"perceptual": "on" if self.perceptual is not None else "off"}

    def stages(self) -> list[Stage]:
        return [Stage("gan", ("generator", "discriminator"), self.cfg.steps)]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple:
        lr = {"generator": self.cfg.lr_g, "discriminator": self.cfg.lr_d}[name]
        return make_adam(params, lr, self.cfg.betas, total_steps)

    def state_extra(self) -> dict[str, Any]:
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        pass

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """D step on (real, detached fake), then G step through the frozen D. Returns the losses of both."""
        cfg = self.cfg
        image = batch["image"].to(ctx.device)
        seg = one_hot_label(batch["label"].to(ctx.device), self.num_classes)
        gen, disc = ctx.module("generator"), ctx.module("discriminator")
        noise = torch.randn(image.shape[0], cfg.z_dim, generator=ctx.generator, device=ctx.device)
        fake, mu, logvar = gen(seg, image, noise)

        real_out = disc(torch.cat([image, seg], 1))
        fake_out = disc(torch.cat([fake.detach(), seg], 1))
        loss_d = sum(discriminator_loss(r[-1], f[-1], cfg.gan_loss) for r, f in zip(real_out, fake_out, strict=True))
        loss_d = loss_d / len(real_out)
        ctx.backward("discriminator", loss_d)
        ctx.optimizer_step("discriminator")

        ctx.set_requires_grad("discriminator", False)  # D stays frozen through G's backward and step
        try:
            losses = self._generator_losses(disc, image, seg, fake, mu, logvar)
            loss_g = (
                cfg.adv_weight * losses["g_adv"]
                + cfg.fm_weight * losses["g_fm"]
                + cfg.kl_weight * losses["g_kl"]
                + cfg.l1_weight * losses["g_l1"]
            )
            if self.perceptual is not None:
                loss_g = loss_g + cfg.perceptual.weight * losses["g_perceptual"]
            ctx.backward("generator", loss_g)
            ctx.optimizer_step("generator")
        finally:
            ctx.set_requires_grad("discriminator", True)
        return {"d": loss_d.detach(), "g": loss_g.detach(), **{k: v.detach() for k, v in losses.items()}}

    def _generator_losses(
        self,
        disc: nn.Module,
        image: torch.Tensor,
        seg: torch.Tensor,
        fake: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        fake_out = disc(torch.cat([fake, seg], 1))
        with torch.no_grad():
            real_out = disc(torch.cat([image, seg], 1))
        adv = sum(generator_adv_loss(f[-1], self.cfg.gan_loss) for f in fake_out) / len(fake_out)
        fm = fake.new_zeros(())
        for f_feats, r_feats in zip(fake_out, real_out, strict=True):
            for f, r in zip(f_feats[:-1], r_feats[:-1], strict=True):
                fm = fm + F.l1_loss(f, r) / (len(f_feats) - 1)
        fm = fm / len(fake_out)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        losses = {"g_adv": adv, "g_fm": fm, "g_kl": kl, "g_l1": F.l1_loss(fake, image)}
        if self.perceptual is not None:
            self.perceptual.to(image.device)
            losses["g_perceptual"] = self.perceptual(fake, image)
        return losses

    @torch.no_grad()
    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Render label maps (B,1,X,Y,Z) with style codes drawn from the prior N(0, I)."""
        net = self.networks["generator"]
        device = next(net.parameters()).device
        seg = one_hot_label(label.to(device), self.num_classes)
        z = torch.randn(seg.shape[0], self.cfg.z_dim, generator=device_generator(generator, device), device=device)
        was_training = net.training
        net.eval()
        try:
            return net.decode(seg, z).float()
        finally:
            net.train(was_training)


def build(config: SpadeGanConfig, num_classes: int, shape: tuple[int, int, int]) -> SpadeGan:
    """Build the SPADE-GAN trainable for label maps with ``num_classes`` classes on the study grid ``shape``."""
    return SpadeGan(config, num_classes, tuple(shape))
