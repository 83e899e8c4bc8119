"""Classifier-free guidance with null label maps, and the DDPM/DDIM sampling loop that applies it.

MONAI's inferers null only the cross-attention context, never the SPADE label map, so their ``cfg`` does
nothing for a SPADE diffusion model. Here the null condition is the all-zero one-hot map: no class is active
at any voxel, which a real one-hot map (exactly one active class per voxel) can never be, so the network
learns it as "no label map" without an extra channel. Training replaces a sample's map by the null map with
probability ``p_uncond``; sampling mixes the two predictions, eps = eps_uncond + w * (eps_cond - eps_uncond).
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn


def null_label_dropout(
    seg: torch.Tensor, p_uncond: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each sample's one-hot map by the null (all-zero) map with probability ``p_uncond``.

    Args:
        seg: (B, C, ...) one-hot label maps.
        p_uncond: probability of nulling a sample.
        generator: RNG for the draws (the engine's per-rank generator in training).

    Returns:
        The maps with the dropped samples zeroed, and the (B,) bool mask of dropped samples.
    """
    dropped = torch.rand(seg.shape[0], generator=generator, device=seg.device) < p_uncond
    keep = (~dropped).to(seg.dtype).view(-1, *([1] * (seg.ndim - 1)))
    return seg * keep, dropped


def guided_eps(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, seg: torch.Tensor, w: float) -> torch.Tensor:
    """Null-mask classifier-free guidance: the conditional and the null-map prediction, mixed by ``w``.

    ``torch.lerp`` returns its end points exactly, so w=0 gives the unconditional and w=1 the conditional
    prediction bit for bit. The two predictions are separate forward calls of the same shape, so each equals
    a plain ``unet(x, t, seg)`` call exactly.

    Args:
        unet: SPADE diffusion U-Net, ``unet(x, timesteps, seg)``.
        x: noisy latents (B, C, ...).
        t: timesteps (B,) long.
        seg: one-hot label maps at latent resolution (B, num_classes, ...).
        w: guidance weight (1 = conditional only, 0 = unconditional only, paper 1.5).

    Returns:
        The guided noise prediction.
    """
    eps_cond = unet(x, t, seg)
    eps_uncond = unet(x, t, torch.zeros_like(seg))
    return torch.lerp(eps_uncond, eps_cond, w)


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device``: ``generator`` itself if it lives there, else one seeded from it (deterministic)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def make_scheduler(kind: str, num_train_timesteps: int, schedule: str, clip: float | None):
    """A MONAI DDPM or DDIM scheduler; ``clip`` bounds the x0 estimate (latents are scaled to unit std)."""
    kwargs = {
        "num_train_timesteps": num_train_timesteps,
        "schedule": schedule,
        "clip_sample": clip is not None,
        "clip_sample_min": -(clip or 1.0),
        "clip_sample_max": clip or 1.0,
    }
    if kind == "ddpm":
        return DDPMScheduler(**kwargs)
    if kind == "ddim":
        return DDIMScheduler(**kwargs)
    raise ValueError(f"unknown sampler {kind!r}")


@torch.no_grad()
def sample_latents(
    unet: nn.Module,
    scheduler: DDPMScheduler | DDIMScheduler,
    steps: int,
    seg: torch.Tensor,
    latent_shape: tuple[int, ...],
    w: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reverse diffusion from Gaussian noise with null-mask guidance at every step.

    Args:
        unet: SPADE diffusion U-Net (eval mode).
        scheduler: DDPM (stochastic; use ``steps = num_train_timesteps``) or DDIM (deterministic, eta 0).
        steps: number of reverse steps.
        seg: one-hot label maps at latent resolution.
        latent_shape: (B, C, x, y, z) of the latents.
        w: guidance weight.
        generator: RNG for the initial noise and the DDPM step noise.

    Returns:
        Latents x0 (scaled space).
    """
    scheduler.set_timesteps(steps, device=seg.device)
    x = torch.randn(latent_shape, generator=generator, device=seg.device)
    for t in scheduler.timesteps:
        tb = torch.full((latent_shape[0],), int(t), device=seg.device, dtype=torch.long)
        eps = guided_eps(unet, x, tb, seg, w)
        if isinstance(scheduler, DDIMScheduler):
            x, _ = scheduler.step(eps, int(t), x, eta=0.0, generator=generator)
        else:
            x, _ = scheduler.step(eps, int(t), x, generator=generator)
    return x
