"""The ``segmentation`` section: the utility study's 3D U-Net, its arms, its training budget and its augmentations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from benchmark.errors import ConfigError

MATCHED_ARM = "real@matched"  # the compute-matched control (benchmark.segmentation.budget)


@dataclass(kw_only=True)
class AugmentConfig:
    """Segmenter augmentations (MRI only; the paper's list), each with its probability."""

    flip: float = 0.5
    affine: float = 0.3
    elastic: float = 0.0
    noise: float = 0.2
    blur: float = 0.1
    gamma: float = 0.2
    bias_field: float = 0.2
    rotate_deg: float = 15.0  # affine: rotation range (+-) about each axis, degrees
    scale: float = 0.1  # affine: isotropic-ish scale range (+-) per axis
    translate_vox: float = 2.0  # affine: translation range (+-) per axis, voxels
    elastic_sigma: tuple[float, float] = (5.0, 7.0)  # elastic: smoothing of the displacement field, voxels
    elastic_magnitude: tuple[float, float] = (50.0, 100.0)  # elastic: displacement magnitude range
    noise_std: float = 0.05  # Gaussian noise: maximum standard deviation (images are normalised to ~[0, 1])
    blur_sigma: tuple[float, float] = (0.25, 1.0)  # Gaussian blur sigma range, voxels
    gamma_range: tuple[float, float] = (0.7, 1.5)  # gamma (adjust contrast) range
    bias_coeff: tuple[float, float] = (0.0, 0.1)  # bias field polynomial coefficient range
    # where the transforms run: cpu = in the loader workers; cuda = on the training GPU, in the training process,
    # for jobs whose CPUs cannot keep up (the loader then only draws volumes and seeds). Left out of the hash at cpu.
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata={"omit_at_default": True})


@dataclass(kw_only=True)
class SegmentationConfig:
    """The utility study's 3D U-Net and its arms.

    ``budget`` says how the arms of a split are matched (``benchmark.segmentation.budget``): ``steps`` (equal
    compute: every arm trains ``steps`` optimizer steps, or with ``epochs`` set as many as ``epochs`` passes over the
    split's real training volumes take) or ``epochs`` (the paper: ``epochs`` passes over each arm's own volumes, so an
    arm with more volumes takes more steps; the ``real@matched`` arm then separates a gain from data from a gain
    from compute).
    """

    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1  # residual units per level (1: about 2/3 of the step time of 2 on the CPU)
    dropout: float = 0.2
    lr: float = 2e-3  # the paper uses 1e-4 over many epochs; 2e-3 learns the phantom in 300 steps
    weight_decay: float = 1e-5
    schedule: Literal["constant", "cosine"] = "constant"  # learning-rate schedule over the steps
    # loss class weights from the arm's voxel counts: 1/n (the paper), 1/sqrt(n) or none
    # ("inverse" over-segments the small cavity within a 300-step CPU budget; set it for the paper protocol)
    class_weighting: Literal["inverse", "sqrt_inverse", "none"] = "sqrt_inverse"
    steps: int = 300  # optimizer steps of a one-rank job (used when ``epochs`` is None)
    epochs: int | None = None  # passes over training volumes: whose volumes, ``budget`` says
    budget: Literal["epochs", "steps"] = "steps"  # arms matched in optimizer steps (equal compute) or in epochs
    batch_size: int = 2
    patch: tuple[int, int, int] | None = None  # None = whole volume; else sliding-window inference
    target: Literal["cavity", "cavity_wall"] = "cavity"
    arms: tuple[str, ...] = ("real", "real+augmented", "real+{generator}")
    ratios: tuple[float, ...] = (1.0,)  # synthetic : real volumes; above 1: ceil(ratio) samples per label map
    # fractions of each split's real training patients the arms train on (nested, seeded per split and seed;
    # benchmark.segmentation.fractions); must hold 1.0. Left out of the config's dict (and so of every hash) at its
    # default, so a study from before the axis existed keeps its job hashes.
    fractions: tuple[float, ...] = field(default=(1.0,), metadata={"omit_at_default": True})
    # activation checkpointing (MONAI CheckpointUNet: each level's blocks recomputed in the backward pass) for a
    # patch that does not fit the GPU; same gradients, more compute. Its weights carry the wrapper's names, so a
    # segmenter trained with it loads only with it. Left out of the hash at its default.
    checkpointing: bool = field(default=False, metadata={"omit_at_default": True})
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check_fractions(self.fractions)
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"segmentation.epochs: {self.epochs} must be >= 1 (or null to use segmentation.steps)")
        if self.budget == "epochs" and self.epochs is None:
            raise ConfigError(
                "segmentation.budget: epochs needs segmentation.epochs (passes over each arm's volumes); set it, "
                "or budget=steps"
            )
        if MATCHED_ARM in self.arms and self.budget != "epochs":
            raise ConfigError(
                f"segmentation.arms: {MATCHED_ARM} is the compute-matched control of segmentation.budget=epochs; "
                f"under budget={self.budget} every arm already trains the same steps (drop {MATCHED_ARM} or set "
                "budget=epochs)"
            )


def _check_fractions(fractions: tuple[float, ...]) -> None:
    """``segmentation.fractions``: values in (0, 1], no repeat, 1.0 among them (the full-data arms, which the
    image-quality jobs and the baseline stand on)."""
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ConfigError(f"segmentation.fractions: {bad[0]} is outside (0, 1] (fractions of the training patients)")
    inexact = [f for f in fractions if float(f"{f:g}") != f]  # names carry f"{f:g}": it must give f back
    if inexact:
        raise ConfigError(f"segmentation.fractions: {inexact[0]!r} has more than 6 significant digits; round it")
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"segmentation.fractions: {list(fractions)} repeats a value")
    if 1.0 not in fractions:
        raise ConfigError(f"segmentation.fractions: {list(fractions)} must include 1.0 (the full-data arms)")
