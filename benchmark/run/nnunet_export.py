"""One arm of a finished study as an nnU-Net v2 raw dataset, so that nnU-Net trains on exactly the suite's data.

``export_arm`` rebuilds the arm's training set the way its segmentation job did (``assemble_arm``: same draws,
same synthetic volumes, same augmented control volumes, the same leakage audit), checks it against the job's
``arm.json`` and writes, under ``<out>``:

```
nnUNet_raw/Dataset<ID>_<name>/
  imagesTr/<case>_0000.nii.gz     every training volume of the arm (one channel: the LGE image)
  labelsTr/<case>.nii.gz          its segmentation target (0 background, 1 LA cavity[, 2 LA wall])
  imagesTs/<case>_0000.nii.gz     the split's held-out real test cases
  labelsTs/<case>.nii.gz          their targets (nnU-Net ignores this folder; for nnUNetv2_evaluate_folder)
  dataset.json                    channel_names, labels, numTraining, file_ending, and the arm's provenance
nnUNet_preprocessed/Dataset<ID>_<name>/splits_final.json
```

``splits_final.json`` holds nnU-Net's cross-validation folds, drawn by patient: a fold validates on the real
scans of its patients and trains on the volumes of the other patients, so no fold trains on a synthetic or
augmented volume made from a validation patient's scan. Training case ids say where a volume comes from:
``real_<case>``, ``extra<k>_<case>`` (the oracle's), ``synth<k>_<case>`` (conditioned on that case's label map)
and ``aug<k>_<case>``. A dataset folder that exists is left alone: with the same content the export is a no-op,
with other content it is an error and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.atomic import temp_path, write_text_atomic
from benchmark.config import load_config
from benchmark.data.io import save_nifti
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.model import make_target
from benchmark.study import Study

FILE_ENDING = ".nii.gz"
_PREFIX = {"real": "real", "real_extra": "extra", "synthetic": "synth", "augmented": "aug"}
_KEPT = "nothing was written: remove it or pick another --dataset-id"
_LABELS = {"cavity": {"background": 0, "LA cavity": 1}, "cavity_wall": {"background": 0, "LA cavity": 1, "LA wall": 2}}


def open_study(study_dir: str | Path) -> Study:
    """The study in ``study_dir`` (its ``config.yaml`` and ``splits.json``), wherever it is opened from.

    Args:
        study_dir: a study folder, ``<output_dir>/<name>``.
    """
    root = Path(study_dir).resolve()
    if not (root / "config.yaml").is_file() or not (root / "splits.json").is_file():
        raise ConfigError(f"--study: {study_dir} is not a study folder (it needs config.yaml and splits.json)")
    cfg = load_config(root / "config.yaml", [f"output_dir={root.parent}"])
    if cfg.name != root.name:
        raise ConfigError(f"--study: {study_dir} holds the config of study {cfg.name!r}, not {root.name!r}")
    return Study(cfg)


def export_arm(
    study_dir: str | Path,
    split: int,
    arm: str,
    *,
    seed: int = 0,
    ratio: float = 1.0,
    dataset_id: int = 501,
    name: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write one arm's training set and its split's test set as ``nnUNet_raw/Dataset<ID>_<name>``.

    Args:
        study_dir: the study folder.
        split: the split index.
        arm: the arm, as the study names it (``real``, ``real+spade_ldm``, ...).
        seed: the arm's training seed.
        ratio: the arm's synthetic:real ratio (its folder is ``<arm>@r<ratio>`` when not 1).
        dataset_id: nnU-Net's dataset id (1..999).
        name: the dataset name; default ``<study>_split<split>_seed<seed>_<arm>`` with other characters as ``_``.
        out: the folder that holds ``nnUNet_raw`` and ``nnUNet_preprocessed`` (default ``<study>/nnunet``).

    Returns:
        The dataset folder. Bad input (a split out of range, an arm the study has not run, a dataset id taken by
        another dataset, a dataset folder or splits file with different content) raises before anything is written.
    """
    from benchmark.run.kinds.segmentation import arm_folder, assemble_arm

    study = open_study(study_dir)
    n = len(study.plan.splits)
    if not 0 <= split < n:
        raise ConfigError(f"--split: {split} is out of range (study {study.cfg.name} has splits 0..{n - 1})")
    if not 1 <= dataset_id <= 999:
        raise ConfigError(f"--dataset-id: {dataset_id} must be in 1..999 (nnU-Net's three-digit ids)")
    params = {"split": split, "seed": seed, "arm": arm, "ratio": ratio}
    record = _arm_record(study, params, arm_folder(params))
    data, audit = assemble_arm(study, params)
    _check_counts(record, data.summary(), study.seg_dir(split, seed, arm_folder(params)) / "arm.json")
    name = name or re.sub(r"[^A-Za-z0-9]+", "_", f"{study.cfg.name}_split{split}_seed{seed}_{arm_folder(params)}")
    out = Path(out) if out is not None else study.root / "nnunet"
    dataset = out / "nnUNet_raw" / f"Dataset{dataset_id:03d}_{name}"
    splits_file = out / "nnUNet_preprocessed" / dataset.name / "splits_final.json"
    _check_id_free(dataset, dataset_id)
    cases = _case_ids(data.items)
    folds = _folds(data.items, cases, study, seed)
    tmp = temp_path(dataset)
    try:
        _write_dataset(tmp, study, data, cases, {**params, "name": name, "leaky": audit.leaky})
        _place(tmp, dataset, json.dumps(folds, indent=1), splits_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset


def _arm_record(study: Study, params: dict[str, Any], folder_name: str) -> dict[str, Any]:
    """The arm's ``arm.json``; an arm the study has not run is a ``ConfigError`` listing those it has."""
    seed_dir = study.seg_dir(params["split"], params["seed"], folder_name).parent
    file = seed_dir / folder_name.replace(":", "_") / "arm.json"
    if not file.is_file():
        have = sorted(p.parent.name for p in seed_dir.glob("*/arm.json"))
        raise ConfigError(
            f"--arm: {folder_name!r} is not an arm that study {study.cfg.name} has run for split {params['split']}, "
            f"seed {params['seed']} (no {file}); its arms there: {', '.join(have) or 'none'}"
        )
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(file, f"unreadable arm record ({exc})") from None


def _check_counts(record: dict[str, Any], rebuilt: dict[str, Any], file: Path) -> None:
    """The rebuilt arm holds what its segmentation job trained on (``arm.json``'s counts)."""
    for key in ("n_real", "n_synthetic", "n_augmented"):
        if record.get(key) != rebuilt[key]:
            rebuilt_n = rebuilt[key]
            raise DataError(file, f"{key} is {record.get(key)}, the arm rebuilt from the study has {rebuilt_n}")


def _check_id_free(dataset: Path, dataset_id: int) -> None:
    """nnU-Net finds a dataset by its id: another ``Dataset<ID>_*`` folder would make the id ambiguous."""
    others = sorted(p.name for p in dataset.parent.glob(f"Dataset{dataset_id:03d}_*") if p.name != dataset.name)
    if others:
        raise DataError(dataset.parent / others[0], f"holds dataset id {dataset_id:03d}; pick another --dataset-id")


def _case_ids(items: list) -> list[str]:
    """nnU-Net case ids of the arm's items: the origin, a running number for non-real items, the source case."""
    ids, counts = [], dict.fromkeys(_PREFIX, 0)
    for item in items:
        k = counts[item.origin]
        counts[item.origin] += 1
        prefix = _PREFIX[item.origin] + ("" if item.origin == "real" else f"{k:03d}")
        ids.append(re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{item.source_case_id}"))
    if len(set(ids)) != len(ids):
        raise DataError("nnU-Net export", "two training volumes got the same case id; rename the study's cases")
    return ids


def _folds(items: list, cases: list[str], study: Study, seed: int) -> list[dict[str, list[str]]]:
    """Up to five folds by patient: validate on a fold's real scans, train on the other patients' volumes."""
    owner = {c: a.patient_id for c, a in study.arrays.items()}
    patient = [owner.get(item.source_case_id, item.source_case_id) for item in items]
    order = sorted(set(patient))
    if len(order) < 2:
        raise DataError("nnU-Net export", "the arm's volumes come from one patient: no cross-validation fold")
    np.random.default_rng(seed).shuffle(order)
    fold_of = {p: i % min(5, len(order)) for i, p in enumerate(order)}
    folds = []
    for f in range(min(5, len(order))):
        val = [c for c, i, p in zip(cases, items, patient, strict=True) if fold_of[p] == f and i.origin == "real"]
        train = [c for c, p in zip(cases, patient, strict=True) if fold_of[p] != f]
        folds.append({"train": sorted(train), "val": sorted(val)})
    return folds


def _write_dataset(folder: Path, study: Study, data: Any, cases: list[str], meta: dict[str, Any]) -> None:
    """imagesTr/labelsTr from the arm's items, imagesTs/labelsTs from the split's test cases, dataset.json."""
    arrays = study.arrays
    for case, item in zip(cases, data.items, strict=True):
        affine = arrays[item.source_case_id].affine
        save_nifti(folder / "imagesTr" / f"{case}_0000{FILE_ENDING}", np.asarray(item.image, np.float32), affine)
        save_nifti(folder / "labelsTr" / f"{case}{FILE_ENDING}", np.asarray(item.target, np.uint8), affine)
    for case in study.plan.splits[meta["split"]].test_cases:
        a = arrays[case]
        save_nifti(folder / "imagesTs" / f"{case}_0000{FILE_ENDING}", np.asarray(a.image, np.float32), a.affine)
        save_nifti(folder / "labelsTs" / f"{case}{FILE_ENDING}", make_target(a.label, data.target), a.affine)
    counts = {k: v for k, v in data.summary().items() if k.startswith("n_")}
    description = (
        f"lge-synthbench study {study.cfg.name}, split {meta['split']}, seed {meta['seed']}, arm {data.arm} "
        f"(ratio {data.ratio:g}): {data.n_real} real, {data.n_synthetic} synthetic, {data.n_augmented} augmented "
        "training volumes" + ("; LEAKY: its generator saw the split's test patients" if meta["leaky"] else "")
    )
    dataset_json = {
        "channel_names": {"0": "LGE MRI"},
        "labels": _LABELS[data.target],
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "name": meta["name"],
        "description": description,
        "lge_synthbench": {**meta, "study": study.cfg.name, "counts": counts},
    }
    write_text_atomic(folder / "dataset.json", json.dumps(dataset_json, indent=1))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _place(tmp: Path, dataset: Path, folds: str, splits_file: Path) -> None:
    """Move the new dataset into place and write the folds, unless either exists with other content."""
    if dataset.exists():
        have, new = _digest(dataset), _digest(tmp)
        if have != new:
            diff = sorted(set(have) ^ set(new)) or sorted(k for k in new if have[k] != new[k])
            raise DataError(dataset, f"exists with different content ({diff[0]}); {_KEPT}")
    if splits_file.exists() and splits_file.read_text() != folds:
        raise DataError(splits_file, f"exists with other folds; {_KEPT}")
    if not dataset.exists():
        tmp.rename(dataset)
    if not splits_file.exists():
        splits_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(splits_file, folds)
