"""The SPADE-LDM generator's autoencoder: MONAI's SPADEAutoencoderKL behind one ``forward``, with optional
activation checkpointing (``generators.spade_ldm.ae_checkpointing``)."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.utils.checkpoint
from monai.networks.nets import SPADEAutoencoderKL
from monai.networks.nets.spade_autoencoderkl import SPADEResBlock
from torch import nn


def _checkpoint_forward(module: nn.Module) -> None:
    """Run ``module`` under activation checkpointing: its inputs are kept, its intermediate tensors recomputed in
    the backward pass. The module keeps its class (the SPADE decoder passes the label map to its blocks by
    ``isinstance``) and its state-dict keys, so weights move freely between checkpointed and plain runs."""
    module.forward = functools.partial(torch.utils.checkpoint.checkpoint, module.forward, use_reentrant=False)


class SpadeAutoencoder(nn.Module):
    """MONAI SPADEAutoencoderKL behind one ``forward`` (so engine wrappers see every call), noise passed in."""

    def __init__(self, cfg: Any, num_classes: int):  # cfg: spade_ldm.SpadeLdmConfig (which imports this module)
        super().__init__()
        levels = len(cfg.ae_channels)
        self.net = SPADEAutoencoderKL(
            spatial_dims=3,
            label_nc=num_classes,
            in_channels=1,
            out_channels=1,
            num_res_blocks=cfg.ae_res_blocks,
            channels=tuple(cfg.ae_channels),
            attention_levels=(False,) * levels,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_groups,
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
            spade_intermediate_channels=cfg.spade_hidden,
        )
        if cfg.ae_checkpointing:
            # a SPADE residual block is checkpointed by its two SPADE norms (their label-map convolutions hold
            # most of a block's full-resolution tensors); measured at 64x64x32: step peak 489 -> 300 MiB, while
            # whole-block checkpointing gave 422 MiB (a block's recomputation holds all of them again)
            for block in (*self.net.encoder.blocks, *self.net.decoder.blocks):
                parts = (block.norm1, block.norm2) if isinstance(block, SPADEResBlock) else (block,)
                for part in parts:
                    _checkpoint_forward(part)

    def forward(
        self,
        x: torch.Tensor,
        seg: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mode: str = "reconstruct",
    ) -> Any:
        """``reconstruct`` (x=image) -> (recon, mu, sigma); ``encode`` -> (mu, sigma); ``decode`` (x=latent)."""
        if mode == "decode":
            return self.net.decode(x, seg)
        mu, sigma = self.net.encode(x)
        if mode == "encode":
            return mu, sigma
        return self.net.decode(mu + noise * sigma, seg), mu, sigma
