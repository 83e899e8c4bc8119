"""3D perceptual loss on a frozen MedicalNet ResNet (MONAI ``resnet50``), weights from a verified local file.

MedicalNet weights cannot be downloaded at run time (and MONAI's ``PerceptualLoss`` reaches for torch.hub even
with ``pretrained=False``), so the backbone is built with MONAI's ``resnet`` and filled from
``PerceptualConfig.weights_path`` after its sha256 is checked. Without a path the loss is off: ``build_perceptual``
returns ``None`` and the generator reports ``perceptual=off`` in ``tags()``. Random weights are never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from monai.networks.nets import resnet
from torch import nn

from benchmark.errors import CheckpointError, ConfigError
from benchmark.weights import load_verified_state_dict

_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50")


@dataclass(kw_only=True)
class PerceptualConfig:
    """Perceptual loss settings (a sub-section of a generator's config).

    ``weights_path`` None switches the loss off (recorded as ``perceptual=off``).
    """

    weights_path: str | None = None  # MedicalNet weights, e.g. resnet_50_23dataset.pth
    weights_sha256: str | None = None
    backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50"] = "resnet50"
    layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    distance: Literal["l1", "mse"] = "l1"  # between unit-normalised features
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.backbone not in _BACKBONES:
            raise ConfigError(f"backbone: {self.backbone!r} is not one of {', '.join(_BACKBONES)}")
        bad = [name for name in self.layers if name not in _LAYERS]
        if bad or not self.layers:
            raise ConfigError(f"layers: {list(self.layers)} must be a non-empty subset of {_LAYERS}")
        if self.distance not in ("l1", "mse"):
            raise ConfigError(f"distance: {self.distance!r} is not one of 'l1', 'mse'")

    @property
    def enabled(self) -> bool:
        return self.weights_path is not None and self.weight > 0


def medicalnet_backbone(name: str = "resnet50") -> nn.Module:
    """A MONAI ResNet with MedicalNet's layout (3D, one input channel, stride-2 stem, no classifier head).

    Args:
        name: ``resnet10`` | ``resnet18`` | ``resnet34`` | ``resnet50``.

    Returns:
        The randomly initialised network; fill it with ``load_state_dict`` before use.
    """
    shallow = name in ("resnet18", "resnet34")  # MedicalNet's 18/34 use shortcut A with biased downsampling
    return getattr(resnet, name)(
        spatial_dims=3,
        n_input_channels=1,
        shortcut_type="A" if shallow else "B",
        bias_downsample=shallow,
        feed_forward=False,
        conv1_t_stride=2,
    )


class PerceptualLoss3D(nn.Module):
    """Distance between unit-normalised ResNet features of two volumes, averaged over the chosen layers.

    Each volume is z-scored first (MedicalNet was trained on z-scored intensities); features are normalised to
    unit length along channels (as in LPIPS) so every layer contributes on the same scale. The backbone is
    frozen and kept in eval mode; gradients flow to the inputs only.

    Args:
        backbone: a ResNet from ``medicalnet_backbone`` holding pretrained weights.
        layers: which residual stages' outputs to compare.
        distance: ``"l1"`` or ``"mse"``.
    """

    def __init__(self, backbone: nn.Module, layers: tuple[str, ...], distance: str = "l1"):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.distance = distance

    def train(self, mode: bool = True) -> PerceptualLoss3D:
        # BatchNorm statistics of a pretrained backbone must never update
        super().train(mode)
        self.backbone.eval()
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        flat = x.flatten(1)
        x = (x - flat.mean(1).view(-1, 1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1, 1) + 1e-5)
        net = self.backbone
        h = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            h = net.maxpool(h)
        feats = []
        last = max(_LAYERS.index(name) for name in self.layers)
        for name in _LAYERS[: last + 1]:
            h = getattr(net, name)(h)
            if name in self.layers:
                feats.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Perceptual distance (scalar) between batches ``x`` and ``y`` of shape (B, 1, X, Y, Z)."""
        total = x.new_zeros(())
        for fx, fy in zip(self._features(x), self._features(y), strict=True):
            diff = fx - fy
            total = total + (diff.abs().mean() if self.distance == "l1" else diff.pow(2).mean())
        return total / len(self.layers)


def build_perceptual(cfg: PerceptualConfig, *, key: str = "perceptual") -> PerceptualLoss3D | None:
    """Build the perceptual loss from a verified local weights file, or None when it is off.

    Args:
        cfg: the generator's perceptual section.
        key: config path of the section, for error messages (e.g. ``generators.spade_gan.perceptual``).

    Returns:
        The frozen loss module, or None when ``weights_path`` is unset or ``weight`` is 0.
    """
    if not cfg.enabled:
        return None
    state = load_verified_state_dict(cfg.weights_path, cfg.weights_sha256, key=f"{key}.weights_path")
    backbone = medicalnet_backbone(cfg.backbone)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(cfg.weights_path, f"does not match MedicalNet {cfg.backbone}: {detail}") from None
    return PerceptualLoss3D(backbone, cfg.layers, cfg.distance)
