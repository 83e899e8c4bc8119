"""Training budgets of the segmentation arms (``segmentation.budget``) and the compute-matched control arm.

With a fixed number of epochs an arm with more training volumes takes more optimizer steps (the paper: 200 epochs
per arm, so ``real+<generator>`` at ratio 1 trains twice the steps of ``real``). ``budget`` says which rule a study
follows:

- ``steps``: every arm of a split trains the same number of optimizer steps: ``segmentation.steps``, or with
  ``segmentation.epochs`` set, ``epochs`` passes over the split's real training volumes (the ``real`` arm's steps);
- ``epochs``: ``epochs`` passes over each arm's own training volumes.

Under ``epochs`` the control arm ``real@matched`` trains the real cases alone for as many steps as the largest arm of
its split, seed, ratio and training-data fraction (``segmentation.fractions``: every count here is the
fraction's), so that ``real+<generator>`` against ``real@matched`` is a gain from data at equal
compute, and ``real@matched`` against ``real`` is what the extra steps alone give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmark.config import SegmentationConfig
from benchmark.config.segmentation import MATCHED_ARM
from benchmark.segmentation.arms import parse_arm

__all__ = ["MATCHED_ARM", "arm_volumes", "budget_steps", "largest_arm_volumes"]


def arm_volumes(arm: str, n_real: int, ratio: float) -> int:
    """Training volumes of an arm as ``build_arm`` assembles it.

    Args:
        arm: an arm name or a ``{generator}`` template (every generator gives the same count).
        n_real: the split's real training cases.
        ratio: extra (synthetic, augmented or oracle) volumes per real one.
    """
    kind, _ = parse_arm(arm.format(generator="g") if "{generator}" in arm else arm)
    extra = max(1, round(ratio * n_real))
    if kind in ("real", MATCHED_ARM):
        return n_real
    return extra if kind == "synthetic_only" else n_real + extra


def largest_arm_volumes(arms: Sequence[str], n_real: int, ratio: float) -> int:
    """The most training volumes of any arm of ``segmentation.arms`` at ``ratio`` (``real@matched``'s budget).

    Args:
        arms: ``segmentation.arms`` (templates allowed).
        n_real: the split's real training cases.
        ratio: the ratio of the control's job.
    """
    return max((arm_volumes(a, n_real, ratio) for a in arms if a != MATCHED_ARM), default=n_real)


def budget_steps(seg_cfg: SegmentationConfig, *, n_real: int, n_volumes: int) -> int:
    """Optimizer steps of one arm's one-rank job under ``segmentation.budget``.

    Args:
        seg_cfg: the ``segmentation`` section (``budget``, ``steps``, ``epochs``, ``batch_size``).
        n_real: the split's real training volumes (what ``epochs`` counts under ``budget: steps``).
        n_volumes: the volumes ``epochs`` counts under ``budget: epochs``: the arm's own, or for ``real@matched``
            the largest arm's (``largest_arm_volumes``).
    """
    if seg_cfg.epochs is None:
        return seg_cfg.steps
    n = n_volumes if seg_cfg.budget == "epochs" else n_real
    return seg_cfg.epochs * math.ceil(n / seg_cfg.batch_size)
