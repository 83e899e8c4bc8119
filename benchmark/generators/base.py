"""What a generator adds to the training contract (``benchmark.engine.contract``): ``sample``, and its registry entry.

A ``GeneratorSpec`` is one registry line in ``benchmark/generators/__init__.py``: a name, a config dataclass
and a ``build(config, num_classes, shape)`` factory returning a ``Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from benchmark.engine.contract import Trainable


class Generator(Trainable, Protocol):
    """A label-conditioned image generator."""

    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate images (B,1,X,Y,Z) float32 for label maps (B,1,X,Y,Z) long, in eval mode, no grad."""


@dataclass(frozen=True)
class GeneratorSpec:
    """One registry entry.

    Args:
        name: registry key (``pix2pix3d``, ``spade_gan``, ``spade_ldm``).
        config_cls: kw_only dataclass of the generator's settings (its YAML section under ``generators.<name>``);
            it also has a ``tiny()`` classmethod returning a small-width config for 16^3-32^3 contract tests.
        build: ``build(config, num_classes, shape) -> Generator``; ``shape`` is the study's (X, Y, Z).
    """

    name: str
    config_cls: type
    build: Callable[[Any, int, tuple[int, int, int]], Generator]
