"""Feature extractors behind FID, KID and MMD: MONAI 3D (or slice-wise 2D) ResNets, globally average pooled.

With MedicalNet weights (a local file checked by sha256) the backbone is named ``medicalnet_<arch>``; without
them the network is randomly initialised from a fixed seed and named ``random_<arch>_seed<k>``. Every metric value
carries this name, so values from different backbones are never compared by accident. The 2.5D mode runs a 2D
ResNet on every slice along the last axis and averages the slice features (``random2d_<arch>_seed<k>``).

The architecture follows MedicalNet (conv1 stride 2; shortcut A for ResNet-18/34, B without bias for the
others) whether or not weights are loaded, so a random and a pretrained backbone differ only in their weights.
Features are cached on disk per volume: ``<cache_dir>/<backbone>/<sha256>.npy``, the key hashing the backbone
name, the weights checksum and the volume's shape and bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import resnet10, resnet34, resnet50
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

from benchmark.atomic import atomic_path
from benchmark.config import MetricsConfig
from benchmark.errors import CheckpointError, DataError
from benchmark.weights import load_verified_state_dict

ARCHS = {"resnet10": resnet10, "resnet34": resnet34, "resnet50": resnet50}


def check_volume(volume: np.ndarray, case_id: str) -> np.ndarray:
    """Return ``volume`` as C-contiguous float32 after checking it is a finite 3D array.

    Args:
        volume: an (X, Y, Z) image.
        case_id: named in the error message.

    Returns:
        The checked float32 array.
    """
    arr = np.ascontiguousarray(volume, dtype=np.float32)
    if arr.ndim != 3:
        raise DataError(f"case {case_id}", f"expected a 3D (X, Y, Z) volume, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"case {case_id}", f"volume holds {bad} NaN/inf voxels")
    return arr


def backbone_name(cfg: MetricsConfig) -> str:
    """The name every feature-based value records, e.g. ``medicalnet_resnet34`` or ``random_resnet34_seed0``."""
    if cfg.feature_mode == "3d":
        return f"medicalnet_{cfg.backbone}" if cfg.weights_path else f"random_{cfg.backbone}_seed{cfg.backbone_seed}"
    if cfg.weights_path:
        return f"pretrained2d_{cfg.backbone}_{(cfg.weights_sha256 or '')[:8]}"
    return f"random2d_{cfg.backbone}_seed{cfg.backbone_seed}"


def build_network(cfg: MetricsConfig) -> torch.nn.Module:
    """Build the backbone in eval mode: weights from ``cfg.weights_path`` (sha256-checked) or a seeded init.

    Args:
        cfg: the metrics section (backbone, feature_mode, weights_path, weights_sha256, backbone_seed).

    Returns:
        A ResNet returning (B, F) pooled features (F = 512, or 2048 for ResNet-50).
    """
    depth = int(cfg.backbone.removeprefix("resnet"))
    bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(depth)
    dims = 3 if cfg.feature_mode == "3d" else 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.backbone_seed)
        net = ARCHS[cfg.backbone](
            spatial_dims=dims,
            n_input_channels=1,
            feed_forward=False,
            shortcut_type=shortcut,
            bias_downsample=bias_downsample,
            conv1_t_stride=2,
        )
    if cfg.weights_path:
        state = load_verified_state_dict(cfg.weights_path, cfg.weights_sha256, key="metrics.weights_path")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(cfg.weights_path, f"does not fit MONAI {cfg.backbone} ({dims}D): {first}") from None
    return net.eval()


class FeatureExtractor:
    """Pooled backbone features of volumes, cached on disk per volume hash.

    Args:
        cfg: the metrics section.
        cache_dir: feature cache folder (created on demand); None disables the cache.
        device: where the network runs.
    """

    def __init__(self, cfg: MetricsConfig, cache_dir: str | Path | None = None, device: str = "cpu"):
        self.name = backbone_name(cfg)
        self.mode = cfg.feature_mode
        self.weights_sha256 = (cfg.weights_sha256 or "").lower() if cfg.weights_path else ""
        self.device = torch.device(device)
        self.net = build_network(cfg).to(self.device)
        self.cache_dir = Path(cache_dir) / self.name if cache_dir is not None else None
        self.n_computed = 0  # network forward passes, i.e. cache misses

    def key(self, volume: np.ndarray) -> str:
        """Cache key of a checked float32 volume for this backbone."""
        h = hashlib.sha256()
        h.update(f"{self.name}|{self.weights_sha256}|{self.mode}|{volume.shape}|{volume.dtype}|".encode())
        h.update(volume.tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def compute(self, volume: np.ndarray) -> np.ndarray:
        """Features of one checked volume, without the cache."""
        x = torch.from_numpy(volume).to(self.device)
        if self.mode == "3d":
            feats = self.net(x[None, None])[0]
        else:  # every slice along the last axis is one 2D image; their features are averaged
            feats = self.net(x.permute(2, 0, 1)[:, None]).mean(dim=0)
        self.n_computed += 1
        return feats.double().cpu().numpy()

    def __call__(self, volume: np.ndarray, case_id: str = "?") -> np.ndarray:
        """Features (F,) float64 of one volume, read from or written to the cache."""
        arr = check_volume(volume, case_id)
        if self.cache_dir is None:
            return self.compute(arr)
        path = self.cache_dir / f"{self.key(arr)}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):  # a damaged entry is recomputed and replaced
                pass
        feats = self.compute(arr)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, feats)
        return feats

    def extract(self, volumes: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
        """Features of a set of volumes.

        Args:
            volumes: case id -> (X, Y, Z) volume.

        Returns:
            The sorted case ids and an (N, F) float64 array in that order.
        """
        ids = sorted(volumes)
        if not ids:
            return ids, np.zeros((0, 0))
        return ids, np.stack([self(volumes[i], i) for i in ids])
