"""Public dataset layouts: where each one keeps its scans and labels, found without reading a voxel.

Supported layouts (``data.kind``):

- ``phantom``: the embedded procedural dataset (``benchmark.data.phantom``).
- ``la2018``: the 2018 Atrial Segmentation Challenge, ``<root>/<split?>/<case>/lgemri.nrrd`` with ``laendo.nrrd``
  (0/255) and, for some cases, ``lawall.nrrd``; every folder holding an ``lgemri.nrrd`` is a case. Its voxels are
  0.625 mm isotropic, which is the default ``expected_spacing``.
- ``msd``: Medical Segmentation Decathlon Task02_Heart, ``imagesTr/la_003.nii.gz`` + ``labelsTr/la_003.nii.gz``
  (the ``training`` list of ``dataset.json`` when present; macOS ``._*`` files are ignored).
- ``lascarqs``: ``<case>/enhanced.nii.gz`` + ``atriumSegImgMO.nii.gz`` (cavity stored as 1, 255 or 420).
- ``nnunet``: nnU-Net raw, ``DatasetXXX_Name/imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` with
  ``dataset.json``; labels 0 background, 1 LA cavity and optionally 2 LA wall. ``data.root`` may point at the
  ``DatasetXXX_Name`` folder or at a folder holding exactly one dataset.

Folders are walked following symbolic links (each real folder once), so a dataset assembled from links to case
folders of a shared read-only copy reads like the original; case ids are the names the links give.

Patients: by default every scan is its own patient. A ``patients.csv`` in the dataset root with the columns
``case_id,patient_id`` maps scans to patients (e.g. pre/post-ablation scans of one person); it must name every case
(extra columns are ignored). ``data.patients=infer`` groups scans instead (``benchmark.data.patients``).

``data.exclude`` leaves named cases out before anything is read (``drop_excluded``).

Conversion into the internal layout, with its checks, is ``benchmark.data.adapters``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.data.io import BINARY_VALUES, LABEL_VALUES
from benchmark.errors import ConfigError, DataError

PATIENTS_CSV = "patients.csv"
LASCARQS_VALUES: dict[int, int] = {0: 0, 1: 1, 255: 1, 420: 1}
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENDING = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9.]*$")


@dataclass(frozen=True)
class SourceCase:
    """One scan as found in a public layout."""

    case_id: str
    image: Path
    label: Path
    wall: Path | None = None  # where an expert wall mask lives (or would live) for this layout
    label_values: Mapping[int, int] = field(default_factory=lambda: dict(BINARY_VALUES))


def _unique(cases: list[SourceCase]) -> list[SourceCase]:
    seen: dict[str, Path] = {}
    for c in cases:
        if not _CASE_ID.match(c.case_id):
            raise DataError(c.image, f"case id {c.case_id!r} is not a safe file name")
        if c.case_id in seen:
            raise DataError(c.image, f"case id {c.case_id!r} also used by {seen[c.case_id]}")
        seen[c.case_id] = c.image
    return sorted(cases, key=lambda c: c.case_id)


def _dataset_dir(root: Path, pattern: str) -> Path:
    """``root`` itself if it holds ``imagesTr/``, else its single sub-folder matching ``pattern`` that does."""
    if (root / "imagesTr").is_dir():
        return root
    found = sorted(d for d in root.glob(pattern) if (d / "imagesTr").is_dir())
    if len(found) != 1:
        names = ", ".join(d.name for d in found) or "none"
        raise DataError(root, f"expected one dataset folder with imagesTr/ (found: {names}); point data.root at it")
    return found[0]


def _inside(root: Path, rel: str, listed_in: Path) -> Path:
    """``root / rel`` when ``rel`` (a path listed in a dataset file) stays inside ``root``; symlinks are allowed."""
    full = Path(os.path.normpath(root / str(rel)))
    if Path(str(rel)).is_absolute() or not full.is_relative_to(Path(os.path.normpath(root))):
        raise DataError(listed_in, f"path {rel!r} escapes the dataset root {root}")
    return full


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable dataset.json ({exc})") from None


def find_files(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` below ``root``, following symbolic links to folders.

    A linked folder is walked under its link's path (so case ids are the link names); a link to a folder that
    holds one of the folders it was reached through is skipped, so links cannot loop. Two links to one folder give
    two cases (and the duplicate-scan check then names them).

    Args:
        root: the folder to search.
        name: the exact file name.

    Returns:
        The paths, sorted.
    """
    found, chains = [], {str(root): (os.path.realpath(root),)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        chain = chains.pop(folder)  # the real folders from root down to this one
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if not any(_holds(real, a) for a in chain):
                keep.append(d)
                chains[os.path.join(folder, d)] = (*chain, real)
        dirs[:] = keep
        if name in files:
            found.append(Path(folder) / name)
    return sorted(found)


def _holds(outer: str, inner: str) -> bool:
    """Whether folder ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def drop_excluded(cases: Sequence, exclude: Sequence[str], root: Path) -> list:
    """The cases whose id is not in ``data.exclude``; an id there that names no case is an error.

    Args:
        cases: found cases (anything with a ``case_id``).
        exclude: the case ids to leave out.
        root: the dataset root, for the message.
    """
    unknown = sorted(set(exclude) - {c.case_id for c in cases})
    if unknown:
        raise ConfigError(f"data.exclude: no case {', '.join(map(repr, unknown))} in {root}")
    return [c for c in cases if c.case_id not in set(exclude)]


def discover_la2018(root: Path) -> list[SourceCase]:
    """Every folder with an ``lgemri.nrrd`` is a case named after the folder."""
    return _unique(
        [
            SourceCase(case_id=p.parent.name, image=p, label=p.parent / "laendo.nrrd", wall=p.parent / "lawall.nrrd")
            for p in find_files(root, "lgemri.nrrd")
        ]
    )


def discover_msd(root: Path) -> list[SourceCase]:
    """``imagesTr``/``labelsTr`` pairs, from ``dataset.json``'s training list when there is one."""
    root = _dataset_dir(root, "Task*")
    meta = root / "dataset.json"
    if meta.is_file():
        entries = _read_json(meta).get("training", [])
        pairs = [(_inside(root, e["image"], meta), _inside(root, e["label"], meta)) for e in entries
                 if "image" in e and "label" in e]  # fmt: skip
    else:
        images = sorted(p for p in (root / "imagesTr").glob("*.nii.gz") if not p.name.startswith("._"))
        pairs = [(p, root / "labelsTr" / p.name) for p in images]
    return _unique([SourceCase(case_id=i.name.removesuffix(".nii.gz"), image=i, label=lab) for i, lab in pairs])


def discover_lascarqs(root: Path) -> list[SourceCase]:
    """Every folder with an ``enhanced.nii.gz`` is a case named after the folder."""
    return _unique(
        [
            SourceCase(
                case_id=p.parent.name,
                image=p,
                label=p.parent / "atriumSegImgMO.nii.gz",
                label_values=LASCARQS_VALUES,
            )
            for p in find_files(root, "enhanced.nii.gz")
        ]
    )


def _nnunet_values(meta: Path) -> dict[int, int]:
    """Label values declared by dataset.json (v2 ``{"LA": 1}`` or v1 ``{"1": "LA"}``); 2 means LA wall."""
    if not meta.is_file():
        return dict(LABEL_VALUES)
    labels = _read_json(meta).get("labels", {})
    try:
        if isinstance(labels, dict) and all(isinstance(v, int) for v in labels.values()):
            values = {int(v) for v in labels.values()}
        else:
            values = {int(k) for k in labels}
    except (TypeError, ValueError):
        values = set()
    if not values <= set(LABEL_VALUES) or 1 not in values:
        raise DataError(meta, f"labels {labels!r} must be 0 background, 1 LA cavity and optionally 2 LA wall")
    return {v: v for v in sorted(values | {0})}


def discover_nnunet(root: Path) -> list[SourceCase]:
    """``imagesTr/<case>_0000<ending>`` with ``labelsTr/<case><ending>`` (ending from dataset.json)."""
    root = _dataset_dir(root, "Dataset*")
    meta = root / "dataset.json"
    ending = _read_json(meta).get("file_ending", ".nii.gz") if meta.is_file() else ".nii.gz"
    if not isinstance(ending, str) or not _ENDING.match(ending):
        raise DataError(meta, f"file_ending {ending!r} is not a file suffix such as '.nii.gz'")
    values = _nnunet_values(meta)
    cases = []
    for p in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
        if p.name.startswith("._"):
            continue
        case_id = p.name.removesuffix(f"_0000{ending}")
        cases.append(SourceCase(case_id, p, root / "labelsTr" / f"{case_id}{ending}", label_values=values))
    return _unique(cases)


def read_patients(root: Path, case_ids: list[str]) -> dict[str, str]:
    """Patient id of every case: from ``patients.csv`` in the dataset root, else each scan its own patient."""
    file = root / PATIENTS_CSV
    if not file.is_file():
        return {c: c for c in case_ids}
    try:
        with open(file, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(file, f"unreadable ({exc})") from None
    if not rows or not {"case_id", "patient_id"} <= set(rows[0]):
        raise DataError(file, "needs the columns case_id,patient_id")
    mapping: dict[str, str] = {}
    for row in rows:
        case, patient = (row["case_id"] or "").strip(), (row["patient_id"] or "").strip()
        if not case or not patient or mapping.get(case, patient) != patient:
            raise DataError(file, f"bad or conflicting row {row}")
        mapping[case] = patient
    missing = [c for c in case_ids if c not in mapping]
    if missing:
        raise DataError(file, f"no patient_id for case(s) {', '.join(missing[:10])}")
    return {c: mapping[c] for c in case_ids}
