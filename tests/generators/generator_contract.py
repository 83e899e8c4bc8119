"""The checks every generator must pass, as plain functions of a ``GeneratorSpec``.

``test_contract.py`` runs them over ``GENERATORS``; a generator defined inside a test (the toy of
``test_toy_generator.py``) runs the very same checks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.engine.loop import fit
from benchmark.generators.base import Generator, GeneratorConfig, GeneratorSpec

SHAPE = (32, 32, 16)
NUM_CLASSES = 4
TRAIN = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=100, threads=1)


def batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    # blocky label maps with a label-dependent intensity: something learnable
    coarse = rng.integers(0, NUM_CLASSES, size=(2, 1, 4, 4, 2))
    label = torch.from_numpy(coarse).repeat_interleave(8, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)
    noise = rng.standard_normal((2, 1, *SHAPE)).astype(np.float32)
    image = label.float() / (NUM_CLASSES - 1) + 0.05 * torch.from_numpy(noise)
    return {"image": image, "label": label.long()}


def build_tiny(spec: GeneratorSpec) -> Generator:
    torch.manual_seed(0)
    return spec.build(spec.config_cls.tiny(), NUM_CLASSES, SHAPE)


def stage_steps(model: Generator, last: int, others: int = 2) -> dict[str, int]:
    stages = model.stages()
    return {s.name: (last if i == len(stages) - 1 else others) for i, s in enumerate(stages)}


def check_declared_features(spec: GeneratorSpec) -> None:
    """The config and the generator declare their optional features with the base's types."""
    tiny = spec.config_cls.tiny()
    assert isinstance(tiny, spec.config_cls) and isinstance(tiny, GeneratorConfig)
    default = spec.config_cls()
    assert default.epochs is None, "epochs=None must keep the stage step counts"
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    for cfg in (tiny, default):
        warmups = cfg.warmups()
        assert set(warmups) <= fields, f"warm-ups that are no fields: {set(warmups) - fields}"
        assert all(getattr(cfg, k) == v for k, v in warmups.items())
        samplers = cfg.samplers()
        assert all(isinstance(n, int) and n >= 1 for n in samplers.values()), samplers
        assert (cfg.default_sampler() in samplers) if samplers else cfg.default_sampler() is None
    model = build_tiny(spec)
    assert isinstance(model, Generator)
    assert model.cfg == tiny
    tags = model.tags()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()), tags


def check_two_steps_and_sample(spec: GeneratorSpec, tmp_path) -> None:
    """Two steps per stage give finite losses; ``sample`` returns finite float32 volumes of the label's shape."""
    model = build_tiny(spec)
    result = fit(model, batch_fn, train=TRAIN, out_dir=tmp_path, seed=0, stage_steps=stage_steps(model, 2))
    assert result.steps == sum(stage_steps(model, 2).values())
    assert result.history, "no losses were logged"
    for entry in result.history:
        for key, value in entry.items():
            if isinstance(value, float) and key != "steps_per_s":
                assert math.isfinite(value), f"{key} at step {entry['step']} is {value}"
    label = torch.from_numpy(np.random.default_rng(1).integers(0, NUM_CLASSES, size=(2, 1, *SHAPE)))
    out = model.sample(label, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, *SHAPE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # sampling leaves no autograd graph behind
    assert not out.requires_grad


class _Crash(Exception):
    pass


def _crashing_batch_fn(after_calls: int):
    calls = []

    def crashing(step, rng):
        if len(calls) == after_calls:
            raise _Crash
        calls.append(step)
        return batch_fn(step, rng)

    return crashing


def check_resume_is_bit_identical(spec: GeneratorSpec, tmp_path, precision: str = "fp32") -> tuple[Any, Any]:
    """3 steps straight == 2 steps, a crash, a fresh model resumed from the checkpoint, 1 step.

    Returns the straight and the resumed run's ``FitResult`` (for checks of a precision's own state).
    """
    steps = stage_steps(build_tiny(spec), 3)
    # prefetch=0: the crash counts batch_fn calls, which a loader process would count in its own copy
    train = TrainConfig(
        engine="torch", precision=precision, batch_size=2, log_every=1, checkpoint_every=1, threads=1, prefetch=0
    )
    straight = fit(build_tiny(spec), batch_fn, train=train, out_dir=tmp_path / "a", seed=3, stage_steps=steps)
    # same schedule lengths as the straight run (cosine schedulers depend on them); the job dies in the last step
    with pytest.raises(_Crash):
        fit(build_tiny(spec), _crashing_batch_fn(sum(steps.values()) - 1), train=train, out_dir=tmp_path / "b",
            seed=3, stage_steps=steps)  # fmt: skip
    resumed = fit(build_tiny(spec), batch_fn, train=train, out_dir=tmp_path / "b", seed=3, stage_steps=steps)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == f"ckpt-{straight.steps - 1:09d}"
    assert len(resumed.timings) == 1, "exactly the one remaining step must be trained after resuming"
    assert resumed.final_losses == straight.final_losses
    assert resumed.steps == straight.steps
    return straight, resumed
