"""SPADE-LDM: a SPADE-conditioned 3D latent diffusion model (MONAI SPADEAutoencoderKL + SPADEDiffusionModelUNet).

Stage ``autoencoder``: the KL autoencoder (SPADE decoder) is trained with L1 + KL (+ perceptual) and, after
``adv_warmup`` steps, a PatchGAN discriminator whose R1 gradient penalty on real volumes starts after
``r1_warmup`` steps. Stage ``diffusion``: the autoencoder is frozen; the diffusion U-Net learns DDPM epsilon-MSE on
its latents (scaled to unit standard deviation by a factor measured once on the first batch), conditioned on the
label map downsampled (nearest) to the latent grid, with null label maps for classifier-free guidance (see
``guidance.py``) and an optional segmentation-consistency loss of a frozen segmenter on the decoded x0 estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import SPADEDiffusionModelUNet
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
from benchmark.generators.guidance import device_generator, make_scheduler, null_label_dropout, sample_latents
from benchmark.generators.perceptual import PerceptualConfig, build_perceptual
from benchmark.generators.spade_autoencoder import SpadeAutoencoder


@dataclass(kw_only=True)
class SpadeLdmConfig(GeneratorConfig):
    """SPADE-LDM settings (section ``generators.spade_ldm``); defaults are small CPU values.

    ``epochs`` (``GeneratorConfig``) replaces both stages' step counts with the same number of passes.
    """

    # autoencoder: len(ae_channels) - 1 downsamplings (paper: four, 8 latent channels)
    ae_channels: tuple[int, ...] = (16, 32, 32)
    ae_res_blocks: int = 1
    latent_channels: int = 8
    norm_groups: int = 8
    spade_hidden: int = 16
    d_channels: int = 16
    d_layers: int = 3
    d_kernel: int = 3
    gan_loss: Literal["hinge", "lsgan"] = "lsgan"
    lr_ae: float = 1e-4
    lr_d: float = 1e-4
    ae_betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 1.0
    kl_weight: float = 1e-6
    adv_weight: float = 0.01
    adv_warmup: int = 50  # autoencoder steps before the discriminator and the adversarial loss start
    r1_gamma: float = 1.0  # R1 penalty weight (gamma / 2 * E||grad_x D(x)||^2 on real volumes)
    r1_warmup: int = 100  # autoencoder steps before the R1 penalty starts
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    ae_steps: int = 200
    # activation checkpointing of the autoencoder's encoder and decoder blocks (each block's inside recomputed in
    # the backward pass) for a volume whose autoencoder step does not fit the GPU; left out of the hash at default
    ae_checkpointing: bool = field(default=False, metadata={"omit_at_default": True})
    # diffusion U-Net: len(unet_channels) - 1 further downsamplings of the latent grid
    unet_channels: tuple[int, ...] = (32, 64)
    unet_res_blocks: int = 1
    unet_attention: tuple[bool, ...] = (False, False)
    unet_head_channels: int = 8
    lr_unet: float = 1e-4
    num_train_timesteps: int = 1000
    schedule: str = "cosine"  # a MONAI NoiseSchedules name: linear_beta, scaled_linear_beta, sigmoid_beta, cosine
    x0_clip: float | None = 4.0  # bound on the x0 estimate in unit-std latent space; None = no clipping
    latent_scale: float | None = None  # None: 1 / std of the first diffusion batch's latents (mean over ranks)
    p_uncond: float = 0.1  # probability of a null label map in training (classifier-free guidance)
    guidance: float = 1.5
    sampler: Literal["ddpm", "ddim"] = "ddim"
    ddim_steps: int = 50
    seg_weight: float = 0.0  # segmentation-consistency loss; > 0: the study gives the job its scope's segmenter
    diffusion_steps: int = 300

    def __post_init__(self) -> None:
        if len(self.unet_attention) != len(self.unet_channels):
            raise ConfigError("unet_attention: needs one entry per unet_channels level")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ConfigError(f"p_uncond: {self.p_uncond} is not a probability")
        if not 1 <= self.ddim_steps <= self.num_train_timesteps:
            raise ConfigError(f"ddim_steps: must be in 1..num_train_timesteps, got {self.ddim_steps}")
        for key in ("ae_channels", "unet_channels"):
            if any(c % self.norm_groups for c in getattr(self, key)):
                raise ConfigError(f"{key}: every width must be a multiple of norm_groups={self.norm_groups}")

    def warmups(self) -> dict[str, int]:
        """The autoencoder's discriminator and R1 penalty start steps."""
        return {"adv_warmup": self.adv_warmup, "r1_warmup": self.r1_warmup}

    def samplers(self) -> dict[str, int]:
        """DDIM with ``ddim_steps`` steps and DDPM with all ``num_train_timesteps``."""
        return {"ddim": self.ddim_steps, "ddpm": self.num_train_timesteps}

    def default_sampler(self) -> str:
        """The ``sampler`` field."""
        return self.sampler

    def needs_segmenter(self) -> bool:
        """A frozen real-only segmenter for the consistency loss, when ``seg_weight > 0``."""
        return self.seg_weight > 0

    @classmethod
    def tiny(cls) -> SpadeLdmConfig:
        """A very small network for 16^3-32^3 tests."""
        return cls(
            ae_channels=(4, 8),
            latent_channels=2,
            norm_groups=4,
            spade_hidden=4,
            d_channels=4,
            d_layers=2,
            unet_channels=(8, 8),
            ae_steps=2,
            diffusion_steps=2,
            adv_warmup=0,
            r1_warmup=1,
            ddim_steps=5,
        )


class SpadeLdm(Generator):
    """SPADE latent diffusion generator. Networks: ``autoencoder``, ``discriminator``, ``unet``."""

    def __init__(self, cfg: SpadeLdmConfig, num_classes: int, shape: tuple[int, int, int]):
        ae_down, unet_down = len(cfg.ae_channels) - 1, len(cfg.unet_channels) - 1
        check_shape(shape, ae_down + unet_down, "generators.spade_ldm.ae_channels/unet_channels")
        self.cfg = cfg
        self.num_classes = num_classes
        self.shape = tuple(shape)
        self.latent_shape = tuple(s // 2**ae_down for s in shape)
        self.networks: dict[str, nn.Module] = {
            "autoencoder": SpadeAutoencoder(cfg, num_classes),
            "discriminator": patch_discriminator(1, cfg.d_channels, cfg.d_layers, cfg.d_kernel, "INSTANCE"),
            "unet": SPADEDiffusionModelUNet(
                spatial_dims=3,
                in_channels=cfg.latent_channels,
                out_channels=cfg.latent_channels,
                label_nc=num_classes,
                num_res_blocks=cfg.unet_res_blocks,
                channels=tuple(cfg.unet_channels),
                attention_levels=tuple(cfg.unet_attention),
                norm_num_groups=cfg.norm_groups,
                num_head_channels=cfg.unet_head_channels,
                spade_intermediate_channels=cfg.spade_hidden,
            ),
        }
        self.scheduler = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.schedule, cfg.x0_clip)
        self.perceptual = build_perceptual(cfg.perceptual, key="generators.spade_ldm.perceptual")
        self.latent_scale: float | None = cfg.latent_scale
        self.segmenter: nn.Module | None = None
        self._seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)

    # ----- contract -----------------------------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """Run tags to log (e.g. ``perceptual=off`` when no MedicalNet weights were given)."""
        return {"perceptual": "on" if self.perceptual is not None else "off"}

    def stages(self) -> list[Stage]:
        return [
            Stage("autoencoder", ("autoencoder", "discriminator"), self.cfg.ae_steps),
            Stage("diffusion", ("unet",), self.cfg.diffusion_steps),
        ]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple:
        if name == "unet":
            return make_adam(params, self.cfg.lr_unet, (0.9, 0.999), total_steps)
        lr = {"autoencoder": self.cfg.lr_ae, "discriminator": self.cfg.lr_d}[name]
        return make_adam(params, lr, self.cfg.ae_betas, total_steps)

    def state_extra(self) -> dict[str, Any]:
        return {"latent_scale": self.latent_scale}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        self.latent_scale = state.get("latent_scale", self.cfg.latent_scale)

    def set_segmenter(self, module: nn.Module | None) -> None:
        """Attach a trained segmentation network (logits with >= 2 channels) for the consistency loss; frozen."""
        self.segmenter = None if module is None else module.eval().requires_grad_(False)

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"].to(ctx.device)
        label = batch["label"].to(ctx.device)
        if stage.name == "autoencoder":
            return self._autoencoder_step(ctx, image, label)
        return self._diffusion_step(ctx, image, label)

    # ----- stage 1 ------------------------------------------------------------------------------------------

    def _autoencoder_step(self, ctx: StepContext, image: torch.Tensor, label: torch.Tensor) -> dict:
        cfg = self.cfg
        seg = one_hot_label(label, self.num_classes)
        ae, disc = ctx.module("autoencoder"), ctx.module("discriminator")
        noise = torch.randn(
            (image.shape[0], cfg.latent_channels, *self.latent_shape), generator=ctx.generator, device=ctx.device
        )
        recon, mu, sigma = ae(image, seg, noise)
        done = ctx.step * ctx.ranks  # the warm-ups count the steps of a one-rank run
        adversarial = done >= cfg.adv_warmup and cfg.adv_weight > 0
        zero = image.new_zeros(())
        loss_d, r1 = zero, zero
        if adversarial:
            use_r1 = done >= cfg.r1_warmup and cfg.r1_gamma > 0
            real = image.detach().requires_grad_(use_r1)
            # the R1 gradient is taken with autograd.grad, which an engine wrapper's backward hooks (DeepSpeed
            # ZeRO) would mistake for the end of a backward pass: the real branch then runs on the plain module
            real_logits = (ctx.unwrapped("discriminator") if use_r1 else disc)(real)[-1]
            loss_d = discriminator_loss(real_logits, disc(recon.detach())[-1], cfg.gan_loss)
            if use_r1:  # under fp16 the context scales this gradient with D's scaler and unscales it for the norm
                grad = ctx.penalty_grad("discriminator", real_logits, real)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                loss_d = loss_d + 0.5 * cfg.r1_gamma * r1
            ctx.backward("discriminator", loss_d)
            ctx.optimizer_step("discriminator")

        l1 = F.l1_loss(recon, image)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).flatten(1).sum(1).mean()
        loss = cfg.l1_weight * l1 + cfg.kl_weight * kl
        out = {"ae_l1": l1, "ae_kl": kl}
        if self.perceptual is not None:
            self.perceptual.to(ctx.device)
            out["ae_perceptual"] = self.perceptual(recon, image)
            loss = loss + cfg.perceptual.weight * out["ae_perceptual"]
        g_adv = zero
        ctx.set_requires_grad("discriminator", False)  # D stays frozen through the autoencoder's backward and step
        try:
            if adversarial:
                g_adv = generator_adv_loss(disc(recon)[-1], cfg.gan_loss)
                loss = loss + cfg.adv_weight * g_adv
            ctx.backward("autoencoder", loss)
            ctx.optimizer_step("autoencoder")
        finally:
            ctx.set_requires_grad("discriminator", True)
        out.update(ae=loss, ae_adv=g_adv, d=loss_d, r1=r1)
        return {k: v.detach() for k, v in out.items()}

    # ----- stage 2 ------------------------------------------------------------------------------------------

    def latent_label(self, label: torch.Tensor) -> torch.Tensor:
        """One-hot label map downsampled (nearest) to the latent grid."""
        small = F.interpolate(label.float(), size=self.latent_shape, mode="nearest").long()
        return one_hot_label(small, self.num_classes)

    def _diffusion_step(self, ctx: StepContext, image: torch.Tensor, label: torch.Tensor) -> dict:
        cfg = self.cfg
        ae, unet = ctx.module("autoencoder"), ctx.module("unet")
        ctx.set_requires_grad("autoencoder", False)  # frozen even if an engine does not freeze off-stage networks
        seg_latent = self.latent_label(label)
        with torch.no_grad():
            mu, sigma = ae(image, mode="encode")
            z = mu + sigma * torch.randn(mu.shape, generator=ctx.generator, device=ctx.device)
            if self.latent_scale is None:  # the same on every rank: their first batches' stds averaged
                self.latent_scale = float(1.0 / ctx.mean_over_ranks(z.std()))
            z = z * self.latent_scale
        t = torch.randint(0, cfg.num_train_timesteps, (z.shape[0],), generator=ctx.generator, device=ctx.device)
        noise = torch.randn(z.shape, generator=ctx.generator, device=ctx.device)
        z_t = self.scheduler.add_noise(z, noise, t)
        seg_in, dropped = null_label_dropout(seg_latent, cfg.p_uncond, ctx.generator)
        eps = unet(z_t, t, seg_in)
        mse = F.mse_loss(eps, noise)
        loss, out = mse, {"eps_mse": mse}
        if cfg.seg_weight > 0:
            seg = self._consistency_loss(ae, z_t, eps, t, label, ~dropped)
            loss, out["seg"] = loss + cfg.seg_weight * seg, seg
        ctx.backward("unet", loss)
        ctx.optimizer_step("unet")
        out["diffusion"] = loss
        return {k: v.detach() for k, v in out.items()}

    def _consistency_loss(
        self,
        ae: nn.Module,
        z_t: torch.Tensor,
        eps: torch.Tensor,
        t: torch.Tensor,
        label: torch.Tensor,
        keep: torch.Tensor,
    ) -> torch.Tensor:
        """Dice + CE of the frozen segmenter on the decoded x0 estimate against the conditioning label map.

        Labels the segmenter has no channel for (context clusters) count as background; samples trained with
        the null map are left out.
        """
        if self.segmenter is None:
            raise ConfigError("generators.spade_ldm.seg_weight: > 0 needs a segmenter (SpadeLdm.set_segmenter)")
        if not bool(keep.any()):
            return eps.new_zeros(())
        acp = self.scheduler.alphas_cumprod.to(z_t.device, z_t.dtype)[t].view(-1, 1, 1, 1, 1)
        x0 = (z_t - (1 - acp).sqrt() * eps) / acp.sqrt()
        if self.cfg.x0_clip is not None:
            x0 = x0.clamp(-self.cfg.x0_clip, self.cfg.x0_clip)
        seg_full = one_hot_label(label[keep], self.num_classes)
        decoded = ae(x0[keep] / self.latent_scale, seg_full, mode="decode")
        segmenter = self.segmenter.to(z_t.device)
        logits = segmenter(decoded)
        if logits.shape[1] < 2:
            raise ConfigError("generators.spade_ldm.seg_weight: the segmenter must output >= 2 softmax channels")
        target = label[keep].long()
        target = torch.where(target < logits.shape[1], target, torch.zeros_like(target))
        return self._seg_loss(logits, target)

    # ----- sampling -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        label: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Generate volumes for label maps (B,1,X,Y,Z) with null-mask guided DDPM or DDIM.

        Args:
            label: integer label maps on the study grid.
            generator: RNG for the initial and per-step noise.
            sampler: ``"ddpm"`` (all ``num_train_timesteps`` steps) or ``"ddim"``; default from config.
            steps: DDIM steps (default ``ddim_steps``); ignored for DDPM.
            guidance: guidance weight (default ``guidance``; 1 = conditional, no guidance).

        Returns:
            (B,1,X,Y,Z) float32 volumes. Before any diffusion training the latent scale is 1.
        """
        cfg = self.cfg
        ae, unet = self.networks["autoencoder"], self.networks["unet"]
        device = next(unet.parameters()).device
        label = label.to(device)
        seg_full = one_hot_label(label, self.num_classes)
        kind = sampler or cfg.sampler
        n = cfg.num_train_timesteps if kind == "ddpm" else (steps or cfg.ddim_steps)
        scheduler = make_scheduler(kind, cfg.num_train_timesteps, cfg.schedule, cfg.x0_clip)
        modes = (ae.training, unet.training)
        ae.eval()
        unet.eval()
        try:
            latent_shape = (label.shape[0], cfg.latent_channels, *self.latent_shape)
            w = cfg.guidance if guidance is None else guidance
            gen = device_generator(generator, device)
            z = sample_latents(unet, scheduler, n, self.latent_label(label), latent_shape, w, gen)
            return ae(z / (self.latent_scale or 1.0), seg_full, mode="decode").float()
        finally:
            ae.train(modes[0])
            unet.train(modes[1])


def build(config: SpadeLdmConfig, num_classes: int, shape: tuple[int, int, int]) -> SpadeLdm:
    """Build the SPADE-LDM trainable for label maps with ``num_classes`` classes on the study grid ``shape``."""
    return SpadeLdm(config, num_classes, tuple(shape))
