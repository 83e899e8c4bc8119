"""The segmentation job: train one arm's U-Net on one split and seed, then evaluate it per case on the test cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.run.kinds.base import JobKind
from benchmark.segmentation.fractions import suffix
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker


def arm_folder(p: dict[str, Any]) -> str:
    """The arm's folder and run-name part: the arm, with ``@r<ratio>`` when the ratio is not 1 and ``@f<fraction>``
    when the training-data fraction is not 1 (``benchmark.segmentation.fractions``)."""
    ratio = p.get("ratio", 1.0)
    return p["arm"] + (f"@r{ratio:g}" if ratio != 1.0 else "") + suffix(p.get("fraction", 1.0))


def run_name(p: dict[str, Any]) -> str:
    """``seg/split<split>/seed<seed>/<arm folder>``."""
    return f"seg/split{p['split']}/seed{p['seed']}/{arm_folder(p)}"


def assemble_arm(study: Study, p: dict[str, Any]) -> tuple[Any, Any]:
    """One arm's training set for a split and seed, audited against the split (nothing is trained).

    Args:
        study: the prepared study (its arrays, splits and patients).
        p: the job's parameters: ``split``, ``seed``, ``arm``, ``ratio``, ``fraction`` (absent: 1.0).

    Returns:
        ``(ArmData, AuditReport)``; a leak raises ``LeakageError``.
    """
    from benchmark.segmentation.arms import audit_arm, build_arm, load_synth_index, parse_arm
    from benchmark.segmentation.controls import ORACLE, outside_cases

    cfg, split, seed, arm = study.cfg, int(p["split"]), int(p["seed"]), p["arm"]
    fraction = float(p.get("fraction", 1.0))
    s = study.plan.splits[split]
    train = study.fraction_cases(split, seed, fraction)  # the split's training cases at 1.0
    arrays = study.arrays
    kind, gen = parse_arm(arm)
    synth = {}
    if gen:  # under per_split a fraction below 1 has its own generator, trained on the fraction's patients
        own = fraction if study.plan.protocol == "per_split" else 1.0
        folder = study.samples_dir(gen, split, seed, own)
        synth[gen] = load_synth_index(folder, generator=gen, split=split, seed=seed)
    patients = study.patient_of
    extra = outside_cases(s, patients) if kind == ORACLE else ()
    real = {c: (arrays[c].image, arrays[c].label) for c in (*train, *extra)}
    data = build_arm(
        arm, train, s.test_cases, real, synth, float(p["ratio"]), seed,
        target=cfg.segmentation.target, augment=cfg.segmentation.augment, split=split, extra_ids=extra,
        patients=patients, protocol=study.plan.protocol,
    )  # fmt: skip
    data.fraction = fraction
    data.provenance["n_train_patients"] = len({patients.get(c, c) for c in train})
    return data, audit_arm(data, s, patients)


def run_segmentation(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Train and evaluate one arm of one split; per-case rows go to ``per_case.csv`` (``benchmark.results``).

    ``real@matched`` trains for the steps of the largest arm of its split, seed, ratio and fraction
    (``benchmark.segmentation.budget``).
    """
    from benchmark.segmentation.budget import MATCHED_ARM, largest_arm_volumes
    from benchmark.segmentation.train import train_arm

    cfg, split, seed = study.cfg, int(p["split"]), int(p["seed"])
    data, audit = assemble_arm(study, p)
    arrays, s = study.arrays, study.plan.splits[split]
    test = {c: (arrays[c].image, arrays[c].label, study.spacing(c)) for c in s.test_cases}
    matched = None
    if p["arm"] == MATCHED_ARM:
        matched = largest_arm_volumes(cfg.segmentation.arms, len(data.train_ids), float(p["ratio"]))
    rows = train_arm(
        data, test, cfg.segmentation, cfg.train, out_dir=out, seed=seed, study=cfg.name, split=split,
        arm=arm_folder(p), tracker=tracker, audit=audit, expected_spacing=cfg.data.expected_spacing,
        budget_volumes=matched,
    )  # fmt: skip
    dice = rows[rows.metric == "dice"].value
    return {
        "arm": p["arm"],
        "n_real": data.n_real,
        "n_real_extra": data.n_real_extra,
        "n_synthetic": data.n_synthetic,
        "n_augmented": data.n_augmented,
        **({"fraction": data.fraction, "n_volumes": len(data.items)} if data.fraction != 1.0 else {}),
        "mean_dice": float(dice.mean()) if len(dice) else float("nan"),
    }


KIND = JobKind(
    name="segmentation",
    sections=("data", "preprocess", "composite", "splits", "train", "segmentation"),
    run_name=run_name,
    out_dir=lambda study, p: study.seg_dir(p["split"], p["seed"], arm_folder(p)),
    body=run_segmentation,
    trains=True,
)
