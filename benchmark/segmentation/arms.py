"""Arms of the utility study (their leakage audit is in ``benchmark.segmentation.audit``).

Every arm of a split is trained on its own list of volumes and evaluated on the same held-out real test cases:

- ``real``: the split's real training cases; ``real@matched``, the same trained for the largest arm's optimizer
  steps (the compute-matched control of ``segmentation.budget: epochs``, ``benchmark.segmentation.budget``);
- ``real+<generator>``: those plus ``round(ratio * n_real)`` synthetic volumes from the generator's
  ``samples.json`` of this split, only samples conditioned on the split's training label maps (for a ratio above 1,
  from the first ``ceil(ratio)`` volumes sampled from each label map, see ``sample_copies``);
- ``synthetic_only:<generator>``: ``round(ratio * n_real)`` synthetic volumes and no real ones;
- ``real+augmented``: the size-matched control, the real cases plus as many extra volumes as the synthetic arm
  at the same ratio, made once by conventional augmentation of the real training cases with a fixed seed;
- ``real+real_extra``: the oracle (positive control), the real cases plus as many extra *real* scans as the
  synthetic arm adds, of patients outside the split (under ``disjoint_pool``: the generators' pool), drawn per
  split and seed; when the pool holds fewer scans, all of them are cycled in a seeded order (``extra_fill`` =
  ``repeated`` in ``arm.json``). Other protocols leave no such patients: the arm is a ``ConfigError`` there;
- ``real+mismatched:<generator>``: the negative control, ``real+<generator>`` with every synthetic volume's target
  replaced by the expert label of another training case (a seeded derangement that also avoids the volume's
  own patient), so images and labels disagree; it must never come out as an improvement.

A synthetic volume's segmentation target is the expert label of the real case whose label map conditioned it
(``label_case_id`` of the negative control says otherwise). ``audit_arm`` (``benchmark.segmentation.audit``, also
importable from here) checks an arm against its split before anything is trained; the draws of the two controls are in
``benchmark.segmentation.controls``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np

from benchmark.config import AugmentConfig
from benchmark.config.segmentation import MATCHED_ARM
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation import controls
from benchmark.segmentation.audit import AuditReport as AuditReport
from benchmark.segmentation.audit import LeakageError as LeakageError
from benchmark.segmentation.audit import audit_arm as audit_arm
from benchmark.segmentation.augment import augment_pair, build_augment, control_config
from benchmark.segmentation.model import make_target
from benchmark.segmentation.samples import SAMPLES_FILE as SAMPLES_FILE
from benchmark.segmentation.samples import SynthIndex as SynthIndex
from benchmark.segmentation.samples import SynthSample as SynthSample
from benchmark.segmentation.samples import generator_command as generator_command
from benchmark.segmentation.samples import load_synth_index as load_synth_index

ORIGINS = ("real", "real_extra", "synthetic", "augmented")


@dataclass(frozen=True)
class ArmItem:
    """One training volume of an arm."""

    image: np.ndarray
    target: np.ndarray
    origin: str  # 'real' | 'real_extra' (a scan from outside the split, the oracle's) | 'synthetic' | 'augmented'
    source_case_id: str
    path: str = ""  # the synthetic NIfTI, for provenance
    label_case_id: str = ""  # the case whose expert label is the target, when not source_case_id (negative control)

    @property
    def target_case_id(self) -> str:
        return self.label_case_id or self.source_case_id


@dataclass
class ArmData:
    """The training set of one arm, with the counts and provenance the study records."""

    arm: str
    kind: str  # 'real' | 'real+generator' | 'synthetic_only' | 'real+augmented' | 'real+real_extra' | 'real+mismatched'
    generator: str | None
    ratio: float
    seed: int
    target: str
    items: list[ArmItem]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    fraction: float = 1.0  # of the split's training patients (``train_ids`` holds only theirs)

    def count(self, origin: str) -> int:
        return sum(item.origin == origin for item in self.items)

    @property
    def n_real(self) -> int:
        """Every real volume: the split's training cases and the oracle's extra scans."""
        return self.count("real") + self.count("real_extra")

    @property
    def n_real_extra(self) -> int:
        return self.count("real_extra")

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
            "fraction": self.fraction,
            "seed": self.seed,
            "target": self.target,
            "n_real": self.n_real,
            "n_real_extra": self.n_real_extra,
            "n_synthetic": self.n_synthetic,
            "n_augmented": self.n_augmented,
            "n_volumes": len(self.items),
            "n_test": len(self.test_ids),
            **self.provenance,
        }


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``(kind, generator)`` of an arm name: one of the module docstring's (the kind of a generator's arm is
    ``real+generator``, ``synthetic_only`` or ``real+mismatched``; of every other arm, its name)."""
    if arm in ("real", MATCHED_ARM, "real+augmented", controls.ORACLE):
        return arm, None
    for kind, prefix in (("synthetic_only", "synthetic_only:"), (controls.MISMATCHED, controls.MISMATCHED + ":")):
        if arm.startswith(prefix) and arm[len(prefix) :] and "{" not in arm:
            return kind, arm[len(prefix) :]
    if arm.startswith("real+") and arm[5:] and "{" not in arm and ":" not in arm:
        return "real+generator", arm[5:]
    raise ConfigError(
        f"segmentation.arms: {arm!r} is not an arm; choices: real, {MATCHED_ARM}, real+augmented, real+real_extra, "
        "real+<generator>, synthetic_only:<generator>, real+mismatched:<generator>"
    )


def sample_copies(ratios: Sequence[float]) -> int:
    """Volumes a generator samples from each training label map so that the arm of every ratio can be filled.

    Args:
        ratios: ``segmentation.ratios``; ``ceil`` of the largest (1 for ratios up to 1).
    """
    return max(1, math.ceil(max(ratios, default=1.0)))


def expand_arms(arms: Sequence[str], generators: Sequence[str]) -> list[str]:
    """Expand ``{generator}`` templates (e.g. ``real+{generator}``) over the study's generators, in order."""
    out: list[str] = []
    for arm in arms:
        names = [arm.format(generator=g) for g in generators] if "{generator}" in arm else [arm]
        out += [n for n in names if n not in out]
    return out


def named_generators(arms: Sequence[str]) -> list[str] | None:
    """The generators a study needs when its arms name them: None when an arm is a ``{generator}`` template or
    no arm names a generator (then the study runs every registered generator).

    Args:
        arms: ``segmentation.arms``, e.g. ``[real, real+real_extra, real+labels2image]`` -> ``[labels2image]``.
    """
    if any("{generator}" in arm for arm in arms):
        return None
    named = [g for g in (parse_arm(arm)[1] for arm in arms) if g]
    return list(dict.fromkeys(named)) or None


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
    split: int | str = 0,
    extra_ids: Sequence[str] = (),
    patients: Mapping[str, str] | None = None,
    protocol: str | None = None,
) -> ArmData:
    """Assemble one arm's training items.

    Args:
        arm: arm name (see ``parse_arm``).
        split_train_ids / split_test_ids: the split's training and test case ids.
        real: case id -> ``(image, label, ...)`` for at least the training cases (label 0/1/2) and ``extra_ids``.
        synth_index: generator name -> its ``SynthIndex`` for this split (only needed by generator arms).
        ratio: extra (synthetic, augmented or oracle real) volumes per real training volume.
        seed: draws which synthetic samples are used and the control's augmentations.
        target: ``"cavity"`` or ``"cavity_wall"``.
        augment: the augmentations behind the ``real+augmented`` control (made stronger by ``control_config``).
        split: the split's index; with ``seed`` it seeds the draws of ``real+real_extra`` and the negative control.
        extra_ids: cases of patients outside the split (``controls.outside_cases``), the oracle's to draw from.
        patients: case id -> patient id; the negative control never pairs a volume with its own patient's label.
        protocol: ``splits.protocol``, named when the oracle has nothing to draw from.

    Returns:
        The ``ArmData`` (run ``audit_arm`` on it before training).
    """
    kind, generator = parse_arm(arm)
    train_ids, test_ids = tuple(split_train_ids), tuple(split_test_ids)
    if ratio <= 0:
        raise ConfigError(f"segmentation.ratios: ratio must be > 0, got {ratio}")
    missing = [c for c in (*train_ids, *extra_ids) if c not in real]
    if missing:
        raise DataError("real training cases", f"arm {arm}: no arrays for cases {missing[:5]}")
    real_items = [ArmItem(_f32(real[c][0]), make_target(real[c][1], target), "real", c) for c in train_ids]
    n_extra = max(1, round(ratio * len(train_ids)))
    data = ArmData(arm, kind, generator, ratio, seed, target, [], train_ids, test_ids)
    data.provenance = {"protocol": None, "generator_seed": None, "generator_train_ids": [], "samples_folder": None}
    rng = np.random.default_rng(seed)
    if kind in ("real", MATCHED_ARM):
        data.items = real_items
    elif kind == "real+augmented":
        data.items = real_items + _augmented(real_items, n_extra, augment or AugmentConfig(), rng)
        data.provenance["augment_seed"] = seed
    elif kind == controls.ORACLE:
        if not extra_ids:
            raise ConfigError(controls.no_pool_message(protocol))
        data.items = real_items + _oracle(data, extra_ids, real, n_extra, controls.control_rng(seed, split, kind))
    else:
        if generator not in synth_index:
            raise DataError(f"<{generator} samples>", f"arm {arm}: no synthetic volumes of {generator} were given")
        idx = synth_index[generator]
        synth = _synthetic(idx, train_ids, real, n_extra, target, rng, math.ceil(ratio))
        if kind == controls.MISMATCHED:
            synth = _mismatched(data, synth, real, patients, controls.control_rng(seed, split, kind))
        data.items = synth if kind == "synthetic_only" else real_items + synth
        data.provenance.update(
            protocol=idx.protocol,
            generator_seed=idx.seed,
            generator_train_ids=list(idx.train_case_ids),
            samples_folder=str(idx.folder),
        )
    data.provenance["sources"] = {o: sorted({i.source_case_id for i in data.items if i.origin == o}) for o in ORIGINS}
    return data


def _oracle(data: ArmData, extra_ids: Sequence[str], real: Mapping[str, tuple], n: int, rng) -> list[ArmItem]:
    """``n`` real scans from outside the split (``controls.draw_extra``); the draw goes into the provenance."""
    drawn, fill = controls.draw_extra(extra_ids, n, rng)
    data.provenance.update(
        extra_pool_size=len(set(extra_ids)),
        extra_fill=fill,
        extra_unique=len(set(drawn)),
        extra_draws={c: drawn.count(c) for c in sorted(set(drawn))},
    )
    return [ArmItem(_f32(real[c][0]), make_target(real[c][1], data.target), "real_extra", c) for c in drawn]


def _mismatched(
    data: ArmData, synth: list[ArmItem], real: Mapping[str, tuple], patients: Mapping[str, str] | None, rng
) -> list[ArmItem]:
    """The synthetic items with the target of their deranged partner case (``controls.derange_cases``)."""
    pairing = controls.derange_cases(data.train_ids, patients, rng)
    out = [
        replace(
            i,
            target=make_target(real[pairing[i.source_case_id]][1], data.target),
            label_case_id=pairing[i.source_case_id],
        )
        for i in synth
    ]
    data.provenance["label_pairs"] = {i.source_case_id: i.label_case_id for i in out}
    data.provenance["pairing"] = "patient-wise derangement" if patients is not None else "case-wise derangement"
    return out


def _f32(image: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32))


def _synthetic(
    index: SynthIndex, train_ids: tuple[str, ...], real: Mapping[str, tuple], n: int, target: str, rng, copies: int
) -> list[ArmItem]:
    """``n`` synthetic items drawn without replacement from the first ``copies`` samples of each of the split's
    training label maps (a ratio-1 arm draws from the first samples only, whatever else the folder holds)."""
    allowed = set(train_ids)
    eligible = sorted(
        (s for s in index.samples if s.case_id in allowed and s.copy < copies), key=lambda s: (s.case_id, str(s.path))
    )
    if len(eligible) < n:
        raise DataError(
            index.folder / SAMPLES_FILE,
            f"{len(eligible)} synthetic volumes conditioned on this split's training cases (up to {copies} per label "
            f"map), the arm needs {n}; make more with: {generator_command(index.generator, index.split, index.seed)}",
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
