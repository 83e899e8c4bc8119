"""The training contract: what the one engine, every generator and the segmenter agree on.

A model the engine trains is a ``Trainable``: named networks, one optimizer/scheduler per network, a list of
``Stage``s (e.g. autoencoder then diffusion), and a ``train_step`` that computes losses and drives
backward/step through a ``StepContext``. The engine implements ``StepContext`` with plain PyTorch or with one
DeepSpeed engine per network, so a trainable never imports torch.distributed or deepspeed and the engine never
branches on a model's name or type. This module imports nothing of the suite: both sides import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    """One training phase: which networks it updates and for how many steps.

    Args:
        name: e.g. ``"gan"``, ``"autoencoder"``, ``"diffusion"``.
        networks: names (keys of ``Trainable.networks``) whose optimizers step in this stage; the others
            are frozen (``requires_grad=False``, eval mode) for the stage.
        steps: optimizer steps of the stage.
    """

    name: str
    networks: tuple[str, ...]
    steps: int


class StepContext(Protocol):
    """What ``train_step`` may touch. The engine provides it."""

    device: torch.device
    step: int  # global step within the current stage, starting at 0
    # ranks sharing the stage's work: step k on each of N ranks stands for step k x N of a one-rank run (warm-ups and
    # other step-counted settings are given for one rank)
    ranks: int
    generator: torch.Generator  # per-rank seeded RNG on ``device`` for noise, timesteps, dropout of masks

    def module(self, name: str) -> nn.Module:
        """The (possibly wrapped) network to call forward on."""

    def unwrapped(self, name: str) -> nn.Module:
        """The network itself, outside any engine wrapper: for graphs differentiated with ``torch.autograd.grad``
        (gradient penalties), which must not pass through a wrapper's backward hooks."""

    def penalty_grad(self, name: str, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The gradient of ``output.sum()`` with respect to ``inputs`` with its graph, for a gradient penalty on
        network ``name`` (R1); under fp16 taken on the output scaled by that network's grad scaler and returned
        unscaled (PyTorch's recipe), so a model never sees a scaler."""

    def backward(self, name: str, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` into network ``name``'s parameters."""

    def optimizer_step(self, name: str) -> None:
        """Step network ``name``'s optimizer and scheduler, then zero its gradients."""

    def set_requires_grad(self, name: str, flag: bool) -> None:
        """Freeze/unfreeze a network's parameters (e.g. D during the G update)."""

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over all ranks (implementations may return ``value`` itself or a copy)."""


class Trainable(Protocol):
    """A model the engine can train. ``networks`` keys are stable names used in checkpoints."""

    networks: dict[str, nn.Module]

    def stages(self) -> list[Stage]: ...

    def make_optimizer(
        self, name: str, params: list[nn.Parameter], total_steps: int
    ) -> tuple[torch.optim.Optimizer, Any]:
        """Optimizer and LR scheduler (or None) for network ``name``."""

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimisation step. ``batch["image"]`` is (B,1,X,Y,Z) float, ``batch["label"]`` (B,1,X,Y,Z) long.

        Returns a dict of scalar losses (tensors); the engine checks them for NaN/inf and logs them.
        """

    def state_extra(self) -> dict[str, Any]:
        """Non-network state to checkpoint (e.g. EMA, warm-up flags); ``{}`` if none."""

    def load_state_extra(self, state: dict[str, Any]) -> None: ...
