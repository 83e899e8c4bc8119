"""Typed study configuration: defaults -> ``configs/<x>.yaml`` -> ``key=value`` overrides.

Every section is a ``kw_only`` dataclass. The loader (``benchmark.config.loader``) walks the dataclass fields, so
an unknown key, a value of the wrong type or a choice outside a ``Literal`` fails with the key's full path and the
allowed choices. YAML is read with ``yaml.safe_load`` only (a python tag is refused). Generator sections are
resolved through the ``GENERATORS`` registry, so a new generator adds no line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmark.config.cluster import ClusterConfig, KindResources, TrackingConfig
from benchmark.config.loader import (  # the loader's helpers are part of this module's API (see __all__)
    build_section,
    config_hash,
    deep_update,
    flatten,
    parse_overrides,
    read_yaml,
    registry_defaults,
    save_config,
    to_dict,
)
from benchmark.config.segmentation import AugmentConfig, SegmentationConfig
from benchmark.errors import ConfigError

__all__ = [  # the sections, the loader and the loader's helpers that callers import from here
    "AugmentConfig",
    "ClusterConfig",
    "KindResources",
    "CompositeConfig",
    "DataConfig",
    "DatasetKind",
    "ExternalTestConfig",
    "MetricsConfig",
    "PhantomConfig",
    "PreprocessConfig",
    "RobustnessConfig",
    "SegmentationConfig",
    "SplitsConfig",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "build_section",
    "config_hash",
    "flatten",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "save_config",
    "to_dict",
]

DatasetKind = Literal["phantom", "la2018", "msd", "lascarqs", "nnunet"]


@dataclass(kw_only=True)
class PhantomConfig:
    """The embedded procedural LA LGE phantom (``benchmark/data/phantom.py``)."""

    n_patients: int = 40
    scans_per_patient: tuple[int, int] = (1, 2)  # inclusive range: pre/post ablation scans share anatomy
    shape: tuple[int, int, int] = (64, 64, 32)  # native grid of the phantom scans
    spacing: tuple[float, float, float] = (1.25, 1.25, 2.5)  # mm
    wall_thickness_mm: tuple[float, float] = (2.0, 3.0)
    noise_sigma: float = 0.04  # Rician noise level relative to blood intensity
    seed: int = 0
    # post-ablation scans moved by this many voxels (random direction per scan) against the pre-ablation scan,
    # so that patient inference (data.patients=infer) has to align the masks; 0 keeps the scans in register
    post_shift_vox: float = 0.0
    # scanner profile (benchmark/data/phantom_sites.py): A = the study's site; B = an unseen site (contrast,
    # noise, field of view, slice thickness) for site-shift test sets, never trained on
    site: Literal["A", "B"] = "A"

    def __post_init__(self) -> None:
        if not 0.0 <= self.post_shift_vox <= 0.25 * min(self.shape):
            raise ConfigError(
                f"phantom.post_shift_vox: {self.post_shift_vox} must be in 0..{0.25 * min(self.shape):g} "
                "(a quarter of the smallest phantom.shape axis)"
            )


@dataclass(kw_only=True)
class DataConfig:
    """Where the images come from and how they are checked."""

    kind: DatasetKind = "phantom"
    root: str | None = None  # dataset folder; None for the phantom
    cache_dir: str = "runs/cache"
    spacing_override: tuple[float, float, float] | None = None  # for headers with identity spacing
    expected_spacing: tuple[float, float, float] | None = None  # known voxel size of the dataset, mm
    wall_mode: Literal["expert", "derive", "cavity_only"] = "derive"  # when a dataset has no wall mask
    wall_thickness_mm: float = 2.5  # thickness of the derived wall shell
    # csv_or_scan: patients.csv in the dataset root, else every scan its own patient (warned for datasets known
    # to hold several scans per patient); infer: scans whose centred cavity masks overlap with Dice of at least
    # patients_dice are one patient (benchmark/data/patients.py)
    patients: Literal["csv_or_scan", "infer"] = "csv_or_scan"
    patients_dice: float = 0.93  # measured on the shifted phantom (tests/data/test_patients.py)
    exclude: tuple[str, ...] = ()  # case ids left out (for a copy that cannot be edited)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.patients_dice < 1.0:
            raise ConfigError(f"data.patients_dice: {self.patients_dice} must be between 0 and 1 (exclusive)")


@dataclass(kw_only=True)
class PreprocessConfig:
    """Resampling to the study grid and intensity normalisation (cached by input hash + this section)."""

    shape: tuple[int, int, int] = (48, 48, 24)
    # None: resize the whole scan to ``shape``; else resample to this spacing (mm) and crop/pad to ``shape``
    # around the LA cavity's centre (how real scans with a large field of view are brought to the study grid)
    spacing: tuple[float, float, float] | None = None
    normalization: Literal["zscore", "minmax", "percentile"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)


@dataclass(kw_only=True)
class CompositeConfig:
    """Composite semantic label maps, the paper's Algorithm 1."""

    k: int = 5  # k-means clusters (2..10), one dropped as background; 0 = expert cavity and wall only (labels 0-2)
    sigma: float = 1.0  # Gaussian smoothing before clustering, voxels
    max_voxels: int = 200_000  # voxels sampled to fit k-means
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k != 0 and not 2 <= self.k <= 10:
            raise ConfigError(f"composite.k: {self.k} is outside the allowed range 2..10 (or 0: cavity and wall only)")

    @property
    def num_classes(self) -> int:
        """Labels 0 (background), 1 (cavity), 2 (wall) and k-1 context clusters 3..k+1 (none for k = 0)."""
        return self.k + 2 if self.k else 3


@dataclass(kw_only=True)
class SplitsConfig:
    """Repeated random patient-wise train/test splits."""

    n_splits: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    file: str | None = None  # a user-supplied splits.json (checked patient-wise)
    protocol: Literal["per_split", "disjoint_pool", "shared"] = "disjoint_pool"
    pool_fraction: float = 0.3  # disjoint_pool: share of patients reserved for generator training
    generator_holdout: int = 0  # shared: >= this many scans (whole patients) no generator trains on (paper: 10)

    def __post_init__(self) -> None:
        if self.generator_holdout < 0 or (self.generator_holdout and self.protocol != "shared"):
            raise ConfigError(f"splits.generator_holdout: {self.generator_holdout} needs >= 0 and protocol shared")


@dataclass(kw_only=True)
class TrainConfig:
    """The engine: how any network is trained (generators and the segmenter alike)."""

    engine: Literal["torch", "deepspeed"] = "torch"
    deepspeed_config: str = "configs/deepspeed/zero2_cpu.json"  # relative to the working dir or the repo root
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # replaces the JSON's bf16/fp16 sections
    zero_stage: int | None = None  # None = the stage in deepspeed_config; 0-2 override it
    batch_size: int = 2  # per rank (DeepSpeed's micro batch); the global batch is batch_size x world size
    checkpoint_every: int = 100  # optimizer steps; checkpoints are also written at the end of every stage
    keep_checkpoints: int = 2  # newest checkpoints kept while training, 1 after success; 0 = keep all, always
    log_every: int = 25
    sync_timing: bool = False  # synchronise the device around each step so per-step timings are exact
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    prefetch: int = 2  # batches built ahead per loader worker while steps train; 0 = build each in its step
    # processes building batches ahead (steps round-robin, handed over in step order); auto = the job's CPUs - 1
    # (affinity, capped by SLURM_CPUS_PER_TASK), at least 1; 0 = build each batch in the training process
    # (left out of the config's dict, and so of every hash, at its default: it changes no number)
    loader_workers: int | Literal["auto"] | None = field(default="auto", metadata={"omit_at_default": True})

    def __post_init__(self) -> None:
        if self.prefetch < 0:
            raise ConfigError(f"train.prefetch: {self.prefetch} must be >= 0 (0 = build each batch inside its step)")
        lw = self.loader_workers
        if lw is not None and lw != "auto" and (isinstance(lw, bool) or not isinstance(lw, int) or lw < 0):
            raise ConfigError(f"train.loader_workers: {lw!r} must be an integer >= 0 (0 = in the step) or auto")


@dataclass(kw_only=True)
class MetricsConfig:
    """Image-quality metrics and the feature backbone behind FID/KID/MMD."""

    backbone: Literal["resnet10", "resnet34", "resnet50"] = "resnet34"
    feature_mode: Literal["3d", "2.5d"] = "3d"
    weights_path: str | None = None  # MedicalNet weights; None = fixed-seed random network
    weights_sha256: str | None = None
    backbone_seed: int = 0
    kid_subsets: int = 50
    kid_subset_size: int = 10
    bootstrap: int = 200
    fixed_n: int = 10  # FID/KID also at this sample size, comparable across studies
    psnr_data_range: float | None = None  # None = the data range of the real volume
    msssim_weights: tuple[float, ...] = (0.0448, 0.2856, 0.3001)
    msssim_kernel: tuple[int, int, int] = (5, 5, 3)
    metrics: tuple[str, ...] = (
        "fid", "kid", "mmd", "mmd_rbf", "psnr", "ms_ssim", "mask_fidelity", "memorisation", "c2st",
    )  # fmt: skip
    seed: int = 0  # bootstrap resamples, KID subsets and fixed-n draws
    fixed_n_draws: int = 20  # subsamples averaged for the fixed-sample-size FID/KID; fixed_n=0 disables them
    fid_method: Literal["sqrtm", "svd"] = "sqrtm"  # point estimate; bootstrap draws use the exact svd identity
    msssim_sigma: float = 1.5  # Gaussian kernel standard deviation, voxels (all axes)
    msssim_data_range: float | None = None  # None = the data range of the real volume
    fidelity_classes: tuple[str, ...] = ("cavity", "wall")  # label 1 and label 2 of the conditioning map
    memorisation_percentile: float = 5.0  # of real-to-real nearest-neighbour distances
    c2st_permutations: int = 100  # label permutations behind the C2ST p-value (p >= 1/(1 + this)); 0 = none

    def __post_init__(self) -> None:
        # messages start at the field name: the loader prefixes the section path ("metrics.")
        if self.kid_subset_size < 2 or self.kid_subsets < 1:
            raise ConfigError(f"kid_subset_size: needs >= 2 with kid_subsets >= 1, got {self.kid_subset_size}")
        if self.fixed_n != 0 and (self.fixed_n < 2 or self.fixed_n_draws < 1):
            raise ConfigError(f"fixed_n: {self.fixed_n} must be 0 (off) or >= 2 with fixed_n_draws >= 1")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap: {self.bootstrap} must be >= 0 (0 = no confidence intervals)")
        if self.c2st_permutations < 0:
            raise ConfigError(f"c2st_permutations: {self.c2st_permutations} must be >= 0 (0 = no p-value)")
        if not 0.0 < self.memorisation_percentile < 100.0:
            raise ConfigError(f"memorisation_percentile: {self.memorisation_percentile} must be in (0, 100)")
        if len(self.msssim_weights) < 1 or any(w <= 0 for w in self.msssim_weights):
            raise ConfigError(f"msssim_weights: {self.msssim_weights} must be one or more positive exponents")
        if any(k < 1 or k % 2 == 0 for k in self.msssim_kernel):
            raise ConfigError(f"msssim_kernel: {self.msssim_kernel} must be odd sizes >= 1 per axis")


# the shifted test sets of a robustness study: the corruption families of benchmark/robustness/corruptions.py
# (tests/robustness/test_robustness_job.py keeps this list equal to CORRUPTIONS), the phantom's site B, an external set
ShiftFamily = Literal[
    "noise", "bias_field", "blur", "gamma", "gibbs", "motion", "ghosting", "slice_thickness", "site", "external",
]  # fmt: skip


@dataclass(kw_only=True)
class ExternalTestConfig:
    """An external test set (any supported layout), evaluated with every segmenter like a hold-out site."""

    path: str | None = None  # the dataset folder (--external-test)
    kind: Literal["la2018", "msd", "lascarqs", "nnunet"] | None = None  # its layout (--external-kind)


@dataclass(kw_only=True)
class RobustnessConfig:
    """Robustness studies: every trained segmenter on shifted test sets (``benchmark/robustness/``)."""

    enabled: bool = False
    # one job per arm x split x seed x family
    families: tuple[ShiftFamily, ...] = ("noise", "ghosting", "slice_thickness", "site")
    severities: tuple[Literal[1, 2, 3], ...] = (1, 2, 3)  # of the corruption families (site, external: one level)
    seed: int = 0  # per-case corruption draws (benchmark.robustness.case_seed): every arm sees the same volumes
    external: ExternalTestConfig = field(default_factory=ExternalTestConfig)
    # also the segmenters of segmentation.fractions below 1.0 (default: the full-data segmenters alone, for cost).
    # Left out of the config's dict (and so of every hash) at its default.
    all_fractions: bool = field(default=False, metadata={"omit_at_default": True})

    def __post_init__(self) -> None:
        if not self.families or not self.severities:
            raise ConfigError("robustness.families and robustness.severities: need at least one entry each")
        if len(set(self.families)) != len(self.families) or len(set(self.severities)) != len(self.severities):
            raise ConfigError(f"robustness.families, severities: an entry repeats ({self.families}, {self.severities})")
        if "external" in self.families and not (self.external.path and self.external.kind):
            raise ConfigError(
                "robustness.families: 'external' needs robustness.external.path and robustness.external.kind "
                "(--external-test PATH --external-kind KIND)"
            )


@dataclass(kw_only=True)
class StudyConfig:
    """One study: the data, the generators, the metrics, the utility arms and where it all runs."""

    name: str = "default"
    output_dir: str = "runs"
    seeds: tuple[int, ...] = (0,)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generators: dict[str, Any] = field(default_factory=registry_defaults, metadata={"registry": "generators"})
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Load a study config.

    Args:
        path: a YAML file in ``configs/`` (or anywhere); None for the built-in defaults.
        overrides: ``key=value`` strings applied last (dotted paths, e.g. ``composite.k=4``).

    Returns:
        The validated ``StudyConfig``. Raises ``ConfigError`` naming the full key path on any problem.
    """
    merged: dict[str, Any] = {}
    if path is not None:
        merged = read_yaml(path)
    deep_update(merged, parse_overrides(list(overrides)))
    try:
        return build_section(StudyConfig, merged, "")
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None
