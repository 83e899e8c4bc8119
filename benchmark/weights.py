"""Pretrained weights from a local file, verified by sha256 (nothing is ever downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.data.manifest import sha256_file
from benchmark.errors import CheckpointError, ConfigError


def load_verified_state_dict(path: str | Path, sha256: str | None, *, key: str = "weights_path") -> dict:
    """Load a state dict from ``path`` after checking its sha256.

    Args:
        path: local weights file (e.g. MedicalNet ``resnet_50_23dataset.pth``).
        sha256: expected hex digest; required, so a swapped file is never used silently.
        key: config key that named the file, for the error message.

    Returns:
        The state dict, with a leading ``module.`` (DataParallel) stripped from keys and a top-level
        ``state_dict`` entry unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: weights file {path} not found")
    if not sha256:
        raise ConfigError(f"{key}: {path} given without its sha256 (set the matching *_sha256 key)")
    actual = sha256_file(path)
    if actual.lower() != sha256.lower():
        raise CheckpointError(path, f"sha256 mismatch: expected {sha256}, file has {actual}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(path, f"not a loadable weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(path, "does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
