"""Which scans belong to one patient, when a dataset does not say.

``data.patients`` picks the source of the patient ids:

- ``csv_or_scan`` (default): ``patients.csv`` in the dataset root (``benchmark.data.layouts.read_patients``), else
  every scan is its own patient. For a dataset known to hold several scans per patient (LA 2018, LAScarQS: pre-
  and post-ablation scans of the same people) the latter is warned about and recorded in the manifest's ``notes``,
  because one person's scans could then sit on both sides of a split.
- ``infer``: scans whose expert cavity masks are near-identical once their centres are aligned are one patient.
  Each cavity is resampled onto a common grid centred on its centre of mass (after turning it to RAS axes);
  two scans match when the Dice of these centred masks is at least ``data.patients_dice``, and matches are
  grouped transitively (union-find). A group's patient id is its smallest case id, so a scan without a match
  keeps its own id, as under ``csv_or_scan``. The mapping is written to ``patients_inferred.csv`` next to the
  manifest, with each scan's closest match and its Dice, for a user to check and copy into ``patients.csv``.

The manifest records how its patient ids came about (``Manifest.patient_source``) and any caveat a report must
state (``Manifest.notes``).
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from benchmark.atomic import write_text_atomic
from benchmark.data.io import load_label
from benchmark.data.manifest import Manifest

INFERRED_CSV = "patients_inferred.csv"
MAX_GRID = 96  # voxels per axis of the common grid at most: a coarser step beyond that keeps the comparison cheap


@dataclass(frozen=True)
class Inference:
    """Patients inferred from cavity masks.

    Args:
        patients: case id -> patient id (the smallest case id of its group).
        closest: case id -> (the other case whose centred mask overlaps most, that Dice); absent for a lone scan.
        min_dice: the threshold used.
    """

    patients: dict[str, str]
    closest: dict[str, tuple[str, float]]
    min_dice: float


def _ras_cavity(label: np.ndarray, affine: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """The cavity cropped to its bounding box plus one empty voxel, turned to RAS axes, with its spacing."""
    ornt = nib.orientations.io_orientation(np.asarray(affine))
    cavity = nib.orientations.apply_orientation(label == 1, ornt)
    out_spacing = np.empty(3)
    out_spacing[ornt[:, 0].astype(int)] = np.asarray(spacing, dtype=float)
    idx = np.argwhere(cavity)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = cavity[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    return np.pad(box, 1), out_spacing  # the margin lets interpolation fall off to 0 at the cavity's edge


def centred_masks(cavities: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Resample cavity masks onto one grid centred on each mask's centre of mass.

    Args:
        cavities: (bool cavity mask in RAS axes, spacing in mm) per scan; masks need not share a grid.

    Returns:
        bool array (N, X, Y, Z): the masks on a common isotropic grid whose centre voxel is each mask's centre of
        mass. Its step is half the finest spacing of the scans (so two scans on different grids are compared
        with little resampling loss), coarser where the cavities would need more than ``MAX_GRID`` voxels per axis.
    """
    coms = [np.asarray(ndimage.center_of_mass(m)) for m, _ in cavities]
    reach = np.max([np.abs(np.argwhere(m) - c).max(axis=0) * s for (m, s), c in zip(cavities, coms, strict=True)],
                   axis=0)  # fmt: skip
    step = max(0.5 * min(float(np.min(s)) for _, s in cavities), 2.0 * float(reach.max()) / (MAX_GRID - 3))
    n = 2 * np.ceil(reach / step).astype(int) + 3
    offsets = [(np.arange(k) - k // 2) * step for k in n]
    out = np.zeros((len(cavities), *n), dtype=bool)
    for i, ((mask, spacing), com) in enumerate(zip(cavities, coms, strict=True)):
        axes = [c + off / sp for c, off, sp in zip(com, offsets, spacing, strict=True)]
        coords = np.meshgrid(*axes, indexing="ij")
        out[i] = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1, cval=0.0) >= 0.5
    return out


def pairwise_dice(masks: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Dice of every pair of masks.

    Args:
        masks: bool array (N, ...).
        chunk: voxels per matrix product (bounds the memory of the float copy).

    Returns:
        float (N, N) matrix, 1 on the diagonal.
    """
    flat = masks.reshape(len(masks), -1)
    inter = np.zeros((len(flat), len(flat)))
    for start in range(0, flat.shape[1], chunk):
        block = flat[:, start : start + chunk].astype(np.float32)
        inter += block @ block.T  # counts below 2**24 per chunk are exact in float32
    volume = np.diag(inter).copy()
    dice = 2.0 * inter / np.maximum(volume[:, None] + volume[None, :], 1.0)
    np.fill_diagonal(dice, 1.0)
    return dice


def group(case_ids: list[str], pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Transitive grouping (union-find) of matched scans.

    Args:
        case_ids: every scan.
        pairs: matched scans (each pair one patient).

    Returns:
        case id -> patient id, the smallest case id of its group.
    """
    parent = {c: c for c in case_ids}

    def root(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {c: root(c) for c in case_ids}


def infer_patients(manifest: Manifest, min_dice: float) -> Inference:
    """Group the scans of a dataset into patients by their centred cavity masks.

    Args:
        manifest: the dataset in the internal layout (labels 0/1/2; label 1 is the cavity).
        min_dice: Dice of the centred masks at or above which two scans are one patient (``data.patients_dice``).

    Returns:
        The ``Inference``.
    """
    ids = [c.case_id for c in manifest.cases]
    cavities = []
    for case in manifest.cases:
        vol = load_label(manifest.path(case, "label"))
        cavities.append(_ras_cavity(vol.array, vol.affine, vol.spacing))
    dice = pairwise_dice(centred_masks(cavities)) if len(ids) > 1 else np.ones((len(ids), len(ids)))
    np.fill_diagonal(dice, -1.0)
    pairs = [(ids[i], ids[j]) for i, j in zip(*np.nonzero(np.triu(dice >= min_dice, 1)), strict=True)]
    closest = {c: (ids[int(np.argmax(dice[i]))], float(dice[i].max())) for i, c in enumerate(ids) if len(ids) > 1}
    return Inference(patients=group(ids, pairs), closest=closest, min_dice=min_dice)


def write_inferred(inference: Inference, path: str | Path) -> Path:
    """Write ``patients_inferred.csv``: ``case_id,patient_id,closest_case,closest_dice`` (a valid patients.csv).

    Args:
        inference: the inferred patients.
        path: the file to write (atomically).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", "patient_id", "closest_case", "closest_dice"])
    for case, patient in sorted(inference.patients.items(), key=lambda kv: (kv[1], kv[0])):
        other, dice = inference.closest.get(case, ("", None))
        writer.writerow([case, patient, other, "" if dice is None else f"{dice:.4f}"])
    return write_text_atomic(Path(path), buf.getvalue())


def apply_inference(manifest: Manifest, min_dice: float, csv_path: str | Path) -> Manifest:
    """Infer patients, write them to ``csv_path`` and return the manifest with the inferred patient ids.

    Args:
        manifest: the dataset in the internal layout.
        min_dice: the ``data.patients_dice`` threshold.
        csv_path: where ``patients_inferred.csv`` goes.
    """
    inference = infer_patients(manifest, min_dice)
    write_inferred(inference, csv_path)
    cases = tuple(replace(c, patient_id=inference.patients[c.case_id]) for c in manifest.cases)
    return replace(manifest, cases=cases)


def inferred_note(manifest: Manifest, min_dice: float, csv_path: str | Path) -> str:
    """The one-line note a report states for inferred patients.

    Args:
        manifest: the dataset with the inferred patient ids.
        min_dice: the threshold used.
        csv_path: where the inferred mapping was written.
    """
    return (
        f"patients inferred from the expert cavity masks (Dice of centred masks >= {min_dice:g}): "
        f"{len(manifest.cases)} scans -> {len(manifest.patients())} patients; check {csv_path}"
    )


def unknown_patients_note(dataset: str, root: str | Path) -> str:
    """Warn (one line) that a dataset holding several scans per patient names no patients, and return the note.

    Args:
        dataset: the layout name (``la2018``, ``lascarqs``).
        root: the dataset root that lacks ``patients.csv``.
    """
    note = (
        f"{root}: no patients.csv, so every {dataset} scan counts as its own patient although this dataset holds "
        "pre- and post-ablation scans of the same people (one person's scans can land on both sides of a split)"
    )
    warnings.warn(
        f"{note}; add {Path(root) / 'patients.csv'} (case_id,patient_id) or set data.patients=infer", stacklevel=3
    )
    return note


def same_patient_pairs(patients: dict[str, str]) -> set[frozenset[str]]:
    """Every unordered pair of scans that share a patient.

    Args:
        patients: case id -> patient id.
    """
    members: dict[str, list[str]] = {}
    for case, patient in patients.items():
        members.setdefault(patient, []).append(case)
    return {frozenset((a, b)) for ids in members.values() for i, a in enumerate(ids) for b in ids[i + 1 :]}


def pair_agreement(inferred: dict[str, str], truth: dict[str, str]) -> tuple[float, float]:
    """Precision and recall of the inferred same-patient pairs against known patients.

    Args:
        inferred: case id -> inferred patient id.
        truth: case id -> true patient id (same cases).

    Returns:
        (precision, recall); each is 1.0 where its denominator is empty.
    """
    found, true = same_patient_pairs(inferred), same_patient_pairs(truth)
    hits = len(found & true)
    return (hits / len(found) if found else 1.0, hits / len(true) if true else 1.0)
