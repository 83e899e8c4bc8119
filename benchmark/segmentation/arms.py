"""Arms of the utility study and the leakage audit.

Every arm of a split is trained on its own list of volumes and evaluated on the same held-out real test cases:

- ``real``: the split's real training cases;
- ``real+<generator>``: those plus ``round(ratio * n_real)`` synthetic volumes from the generator's
  ``samples.json`` of this split, only samples conditioned on the split's training label maps;
- ``synthetic_only:<generator>``: ``round(ratio * n_real)`` synthetic volumes and no real ones;
- ``real+augmented``: the size-matched control, the real cases plus as many extra volumes as the synthetic arm
  at the same ratio, made once by conventional augmentation of the real training cases with a fixed seed.

A synthetic volume's segmentation target is the expert label of the real case whose label map conditioned it.
``audit_arm`` checks an arm against its split before anything is trained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from benchmark.config import AugmentConfig
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.augment import augment_pair, build_augment, control_config
from benchmark.segmentation.model import make_target

SAMPLES_FILE = "samples.json"
ORIGINS = ("real", "synthetic", "augmented")


class LeakageError(DataError):
    """An arm's training data touches the split's test patients."""


@dataclass(frozen=True)
class SynthSample:
    """One synthetic volume: ``case_id`` is the real case whose label map conditioned it."""

    case_id: str
    path: Path


@dataclass(frozen=True)
class SynthIndex:
    """A generator's output folder for one split and seed, read from its ``samples.json``."""

    folder: Path
    generator: str
    seed: int
    protocol: str
    train_case_ids: tuple[str, ...]
    samples: tuple[SynthSample, ...]
    split: int | str = "<split>"


@dataclass(frozen=True)
class ArmItem:
    """One training volume of an arm."""

    image: np.ndarray
    target: np.ndarray
    origin: str  # 'real' | 'synthetic' | 'augmented'
    source_case_id: str
    path: str = ""  # the synthetic NIfTI, for provenance


@dataclass
class ArmData:
    """The training set of one arm, with the counts and provenance the study records."""

    arm: str
    kind: str  # 'real' | 'real+generator' | 'synthetic_only' | 'real+augmented'
    generator: str | None
    ratio: float
    seed: int
    target: str
    items: list[ArmItem]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def count(self, origin: str) -> int:
        return sum(item.origin == origin for item in self.items)

    @property
    def n_real(self) -> int:
        return self.count("real")

    @property
    def n_synthetic(self) -> int:
        return self.count("synthetic")

    @property
    def n_augmented(self) -> int:
        return self.count("augmented")

    def summary(self) -> dict[str, Any]:
        """Counts and provenance as a JSON-safe dict (written to ``arm.json``)."""
        return {
            "arm": self.arm,
            "kind": self.kind,
            "generator": self.generator,
            "ratio": self.ratio,
            "seed": self.seed,
            "target": self.target,
            "n_real": self.n_real,
            "n_synthetic": self.n_synthetic,
            "n_augmented": self.n_augmented,
            "n_test": len(self.test_ids),
            **self.provenance,
        }


def generator_command(generator: str, split: int | str, seed: int) -> str:
    """The command that trains a generator on one split and writes its synthetic volumes."""
    return f"python launchers/train_generator.py --generator {generator} --split {split} --seed {seed}"


def load_synth_index(folder: str | Path, *, generator: str, split: int | str, seed: int) -> SynthIndex:
    """Read a generator's ``samples.json`` and check that every listed volume exists.

    Args:
        folder: the generator's output folder for this split and seed.
        generator, split, seed: what the folder should hold (used in messages and checked against the file).

    Returns:
        The ``SynthIndex``. A missing folder, file or volume raises ``DataError`` naming the path and the command
        that makes it.
    """
    folder = Path(folder)
    file = folder / SAMPLES_FILE
    make = f"make them with: {generator_command(generator, split, seed)}"
    if not file.is_file():
        raise DataError(file, f"no synthetic volumes of {generator} for split {split}, seed {seed}; {make}")
    try:
        d = json.loads(file.read_text())
        samples = tuple(SynthSample(str(s["case_id"]), folder / s["path"]) for s in d["samples"])
        index = SynthIndex(
            folder=folder,
            generator=str(d["generator"]),
            seed=int(d["seed"]),
            protocol=str(d["protocol"]),
            train_case_ids=tuple(str(c) for c in d["train_case_ids"]),
            samples=samples,
            split=split,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(file, f"not a valid samples file ({type(exc).__name__}: {exc}); {make}") from None
    if index.generator != generator:
        raise DataError(file, f"holds samples of {index.generator!r}, expected {generator!r}")
    if "split" in d and str(d["split"]) != str(split):
        raise DataError(file, f"holds samples of split {d['split']}, expected split {split}")
    for s in samples:
        if not s.path.resolve().is_relative_to(folder.resolve()):
            raise DataError(file, f"sample path {s.path} escapes the folder")
        if not s.path.is_file():
            raise DataError(s.path, f"synthetic volume listed in {file} is missing; {make}")
    return index


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``(kind, generator)`` of an arm name: real, real+augmented, real+<generator>, synthetic_only:<generator>."""
    if arm in ("real", "real+augmented"):
        return arm, None
    if arm.startswith("synthetic_only:") and arm.split(":", 1)[1]:
        return "synthetic_only", arm.split(":", 1)[1]
    if arm.startswith("real+") and arm[5:] and "{" not in arm:
        return "real+generator", arm[5:]
    raise ConfigError(
        f"segmentation.arms: {arm!r} is not an arm; choices: real, real+augmented, real+<generator>, "
        "synthetic_only:<generator>"
    )


def expand_arms(arms: Sequence[str], generators: Sequence[str]) -> list[str]:
    """Expand ``{generator}`` templates (e.g. ``real+{generator}``) over the study's generators, in order."""
    out: list[str] = []
    for arm in arms:
        names = [arm.format(generator=g) for g in generators] if "{generator}" in arm else [arm]
        out += [n for n in names if n not in out]
    return out


def build_arm(
    arm: str,
    split_train_ids: Sequence[str],
    split_test_ids: Sequence[str],
    real: Mapping[str, tuple],
    synth_index: Mapping[str, SynthIndex],
    ratio: float = 1.0,
    seed: int = 0,
    *,
    target: str = "cavity",
    augment: AugmentConfig | None = None,
) -> ArmData:
    """Assemble one arm's training items.

    Args:
        arm: arm name (see ``parse_arm``).
        split_train_ids / split_test_ids: the split's training and test case ids.
        real: case id -> ``(image, label, ...)`` for at least the training cases (label 0/1/2).
        synth_index: generator name -> its ``SynthIndex`` for this split (only needed by generator arms).
        ratio: extra (synthetic or augmented) volumes per real training volume.
        seed: draws which synthetic samples are used and the control's augmentations.
        target: ``"cavity"`` or ``"cavity_wall"``.
        augment: the augmentations behind the ``real+augmented`` control (made stronger by ``control_config``).

    Returns:
        The ``ArmData`` (run ``audit_arm`` on it before training).
    """
    kind, generator = parse_arm(arm)
    train_ids, test_ids = tuple(split_train_ids), tuple(split_test_ids)
    if ratio <= 0:
        raise ConfigError(f"segmentation.ratios: ratio must be > 0, got {ratio}")
    missing = [c for c in train_ids if c not in real]
    if missing:
        raise DataError("real training cases", f"arm {arm}: no arrays for cases {missing[:5]}")
    real_items = [ArmItem(_f32(real[c][0]), make_target(real[c][1], target), "real", c) for c in train_ids]
    n_extra = max(1, round(ratio * len(train_ids)))
    data = ArmData(arm, kind, generator, ratio, seed, target, [], train_ids, test_ids)
    data.provenance = {"protocol": None, "generator_seed": None, "generator_train_ids": [], "samples_folder": None}
    rng = np.random.default_rng(seed)
    if kind == "real":
        data.items = real_items
    elif kind == "real+augmented":
        data.items = real_items + _augmented(real_items, n_extra, augment or AugmentConfig(), rng)
        data.provenance["augment_seed"] = seed
    else:
        if generator not in synth_index:
            raise DataError(f"<{generator} samples>", f"arm {arm}: no synthetic volumes of {generator} were given")
        synth = _synthetic(synth_index[generator], train_ids, real, n_extra, target, rng)
        data.items = synth if kind == "synthetic_only" else real_items + synth
        idx = synth_index[generator]
        data.provenance.update(
            protocol=idx.protocol,
            generator_seed=idx.seed,
            generator_train_ids=list(idx.train_case_ids),
            samples_folder=str(idx.folder),
        )
    data.provenance["sources"] = {o: sorted({i.source_case_id for i in data.items if i.origin == o}) for o in ORIGINS}
    return data


def _f32(image: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32))


def _synthetic(
    index: SynthIndex, train_ids: tuple[str, ...], real: Mapping[str, tuple], n: int, target: str, rng
) -> list[ArmItem]:
    """``n`` synthetic items drawn without replacement from samples conditioned on the split's training cases."""
    allowed = set(train_ids)
    eligible = sorted((s for s in index.samples if s.case_id in allowed), key=lambda s: (s.case_id, str(s.path)))
    if len(eligible) < n:
        raise DataError(
            index.folder / SAMPLES_FILE,
            f"{len(eligible)} synthetic volumes conditioned on this split's training cases, the arm needs {n}; "
            f"make more with: {generator_command(index.generator, index.split, index.seed)}",
        )
    chosen = sorted(rng.choice(len(eligible), size=n, replace=False).tolist())
    items = []
    for i in chosen:
        s = eligible[i]
        label = np.asarray(real[s.case_id][1])
        try:
            image = _f32(nib.load(str(s.path)).get_fdata(dtype=np.float32))
        except Exception as exc:  # nibabel raises many types for a corrupt file
            raise DataError(s.path, f"cannot read synthetic volume ({type(exc).__name__}: {exc})") from None
        image = image.reshape(image.shape[:3]) if image.ndim == 4 and image.shape[3] == 1 else image
        if image.shape != label.shape:
            raise DataError(s.path, f"shape {image.shape} differs from its label map {s.case_id} {label.shape}")
        items.append(ArmItem(image, make_target(label, target), "synthetic", s.case_id, str(s.path)))
    return items


def _augmented(real_items: list[ArmItem], n: int, cfg: AugmentConfig, rng: np.random.Generator) -> list[ArmItem]:
    """``n`` augmented copies of the real items, cycling through them in a seeded order."""
    transform = build_augment(control_config(cfg))
    order = rng.permutation(len(real_items))
    out = []
    for k in range(n):
        src = real_items[int(order[k % len(order)])]
        image, target = augment_pair(transform, src.image, src.target, rng)
        out.append(ArmItem(image, target.astype(np.uint8), "augmented", src.source_case_id))
    return out


@dataclass(frozen=True)
class AuditReport:
    """The outcome of ``audit_arm``: ``leaky`` is True only for the allowed ``shared`` protocol."""

    arm: str
    protocol: str | None
    leaky: bool
    message: str


def audit_arm(arm_data: ArmData, split: Any) -> AuditReport:
    """Check an arm against its split; raise ``LeakageError`` on any leak of a test patient into training.

    Args:
        arm_data: the arm from ``build_arm``.
        split: a ``benchmark.data.splits.Split`` (or anything with ``train_cases``, ``test_cases`` and
            optionally ``train_patients`` / ``test_patients`` / ``index``).

    Returns:
        An ``AuditReport``. Fails when a training item comes from a test case or from outside the split's
        training cases, when the arm's test list differs from the split's, or when the generator's training
        ids include a test patient (allowed only under the ``shared`` protocol, which is flagged leaky).
    """
    where = f"arm {arm_data.arm} of split {getattr(split, 'index', '?')}"
    train, test = set(split.train_cases), set(split.test_cases)
    test_any = test | set(getattr(split, "test_patients", ()))
    folder = arm_data.provenance.get("samples_folder") or f"<{arm_data.arm}>"
    if set(arm_data.test_ids) != test:
        raise LeakageError(folder, f"{where}: its test cases are not the split's test cases")
    overlap = sorted(set(arm_data.train_ids) & test_any)
    if overlap:
        raise LeakageError(folder, f"{where}: test cases in its training list: {overlap[:5]}")
    for item in arm_data.items:
        if item.source_case_id in test_any:
            raise LeakageError(
                item.path or folder,
                f"{where}: {item.origin} training volume derived from test case {item.source_case_id}",
            )
        if item.source_case_id not in train:
            raise LeakageError(
                item.path or folder,
                f"{where}: {item.origin} training volume derived from {item.source_case_id}, "
                "which is not a training case of the split",
            )
    protocol = arm_data.provenance.get("protocol")
    seen = sorted(set(arm_data.provenance.get("generator_train_ids") or ()) & test_any)
    if seen and protocol != "shared":
        raise LeakageError(
            folder,
            f"{where}: generator {arm_data.generator} was trained on test patients/cases {seen[:5]} "
            f"(protocol {protocol!r}); only the 'shared' protocol may, and it is reported as leaky",
        )
    leaky = protocol == "shared"
    msg = f"{where}: leaky (shared protocol; generator saw {len(seen)} test cases)" if leaky else f"{where}: clean"
    return AuditReport(arm_data.arm, protocol, leaky, msg)
