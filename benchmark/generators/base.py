"""What a generator adds to the training contract (``benchmark.engine.contract``): ``sample``, its config base
and its registry entry.

A ``GeneratorSpec`` is one registry line in ``benchmark/generators/__init__.py``: a name, a ``GeneratorConfig``
subclass and a ``build(config, num_classes, shape)`` factory returning a ``Generator``. Optional features are
declared here, with defaults, so callers use them directly: ``epochs``, ``tiny()``, ``warmups()``, ``samplers()``,
``needs_segmenter()`` on the config; ``tags()``, ``set_segmenter()`` and ``cfg`` on the generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from benchmark.engine.contract import Trainable


@dataclass(kw_only=True)
class GeneratorConfig:
    """Base of every generator's settings (its YAML section ``generators.<name>``).

    Args:
        epochs: passes over the training cases, converted to optimizer steps of every stage by the training job
            (``benchmark.generators.train``); None keeps the stage step counts of the config.
        precision: the engine precision of this generator's training job (autocast, and a gradient scaler per
            network for fp16), replacing ``train.precision`` for it alone; None keeps ``train.precision``.

    ``deterministic_sampling`` (a class attribute, not a setting) declares a ``sample`` that ignores its noise, so
    that several volumes per label map (``segmentation.ratios`` above 1) are refused rather than duplicated.
    """

    deterministic_sampling: ClassVar[bool] = False
    epochs: int | None = None
    precision: Literal["fp32", "bf16", "fp16"] | None = None

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """A few-thousand-parameter variant for contract tests on 16^3-32^3 volumes; every subclass defines it."""
        raise NotImplementedError(f"{cls.__name__} must define tiny()")

    def warmups(self) -> dict[str, int]:
        """Warm-up fields (step counts before a loss term starts) and their values.

        The profiler sets them to 0 so that its few timed steps are steady-state steps; keys must be field names.
        """
        return {}

    def samplers(self) -> dict[str, int]:
        """Named iterative samplers and their step counts, e.g. ``{"ddim": 50, "ddpm": 1000}``.

        A generator whose config declares samplers accepts ``sample(..., sampler=name, steps=n)``; empty (the
        default) for single-pass generators.
        """
        return {}

    def default_sampler(self) -> str | None:
        """The key of ``samplers()`` that ``sample`` uses when no ``sampler`` is given; None without samplers."""
        return None

    def needs_segmenter(self) -> bool:
        """Whether training needs a frozen real-only segmenter of the generator's scope (a consistency loss).

        The study then trains one on the scope's training cases before the generator job
        (``benchmark.run.kinds.scope_segmenter``) and hands it over with ``Generator.set_segmenter``; False by default.
        """
        return False


@runtime_checkable
class Generator(Trainable, Protocol):
    """A label-conditioned image generator. Generator classes inherit it, so they get the defaults below."""

    cfg: GeneratorConfig  # the settings it was built from

    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate images (B,1,X,Y,Z) float32 for label maps (B,1,X,Y,Z) long, in eval mode, no grad."""

    def tags(self) -> dict[str, str]:
        """Run tags the generator job logs (e.g. ``perceptual=off``); none by default."""
        return {}

    def set_segmenter(self, module: torch.nn.Module | None) -> None:
        """Attach the frozen segmenter a config with ``needs_segmenter()`` asks for (logits, >= 2 channels).

        Generators whose config never asks for one refuse it.
        """
        raise NotImplementedError(f"{type(self).__name__} takes no segmenter (its config's needs_segmenter() is False)")


@dataclass(frozen=True)
class GeneratorSpec:
    """One registry entry.

    Args:
        name: registry key (``pix2pix3d``, ``spade_gan``, ``spade_ldm``).
        config_cls: the ``GeneratorConfig`` subclass of the generator's settings (its YAML section under
            ``generators.<name>``), with its own ``tiny()``.
        build: ``build(config, num_classes, shape) -> Generator``; ``shape`` is the study's (X, Y, Z).
    """

    name: str
    config_cls: type[GeneratorConfig]
    build: Callable[[Any, int, tuple[int, int, int]], Generator]
