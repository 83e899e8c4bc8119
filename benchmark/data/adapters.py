"""Dataset adapters: every public layout (``benchmark.data.layouts``) is converted into the internal layout
(``benchmark.data.manifest``); ``phantom`` is the embedded procedural dataset (``benchmark.data.phantom``).

Checks (each a ``DataError`` naming the file): missing or unreadable files, image/label shape, spacing, axis
orientation or origin mismatch, a path in ``dataset.json`` that leads out of the dataset root,
label values outside the layout's set, an empty cavity, implausible spacing (outside 0.05..20 mm), and the same
scan twice (identical file bytes or identical voxels). A header with identity spacing where the dataset is known to
differ (``data.expected_spacing``) is a warning; ``data.spacing_override`` then replaces the spacing of such files.

Wall: an expert wall mask is used where the layout has one. Otherwise ``data.wall_mode`` decides: ``derive`` draws
a shell of ``data.wall_thickness_mm`` around the cavity (``phantom.wall_shell``), ``cavity_only`` writes no wall
label (also dropping expert walls, so every case is labelled alike), ``expert`` fails for a case without one.

Cases: ``data.exclude`` leaves case ids out before any file is read (an unknown id is a ``ConfigError``).
Patients: ``data.patients`` (``benchmark.data.patients``); the returned manifest records where its patient ids
came from (``patient_source``) and the caveats a report must state (``notes``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.config import DataConfig, config_hash, to_dict
from benchmark.data.io import (
    BINARY_VALUES,
    building,
    load_label,
    load_volume,
    save_nifti,
    verified_manifest,
)
from benchmark.data.layouts import (
    PATIENTS_CSV,
    SourceCase,
    discover_la2018,
    discover_lascarqs,
    discover_msd,
    discover_nnunet,
    drop_excluded,
    read_patients,
)
from benchmark.data.manifest import Case, Manifest, sha256_file
from benchmark.data.patients import INFERRED_CSV, apply_inference, inferred_note, unknown_patients_note
from benchmark.data.phantom import generate_phantom, wall_shell
from benchmark.errors import ConfigError, DataError

ADAPTER_VERSION = 1


@dataclass(frozen=True)
class Layout:
    """A public layout: how to find its cases and what is known about its voxels."""

    name: str
    discover: Callable[[Path], list[SourceCase]]
    expected_spacing: tuple[float, float, float] | None = None
    several_scans_per_patient: bool = False  # known to hold pre/post-ablation scans of one person

    def __call__(self, data: DataConfig, out_dir: str | Path) -> Manifest:
        return convert(self, data, out_dir)


# ---------------------------------------------------------------------------------------------------------
# conversion


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _geometry(vol, data: DataConfig, expected) -> np.ndarray:
    """The affine to write: identity-spacing headers are flagged (and overridden when asked), then checked."""
    affine = vol.affine.copy()
    spacing = np.asarray(vol.spacing)
    identity = np.allclose(spacing, 1.0, atol=1e-6)
    if identity and data.spacing_override is not None:
        warnings.warn(
            f"{vol.path}: header spacing is (1, 1, 1); using data.spacing_override {_fmt(data.spacing_override)}",
            stacklevel=2,
        )
        affine[:3, :3] = affine[:3, :3] / spacing * np.asarray(data.spacing_override)
    elif identity and expected is not None and not np.allclose(expected, 1.0):
        warnings.warn(
            f"{vol.path}: header spacing is (1, 1, 1) but this dataset's voxels are {_fmt(expected)} mm; "
            "distances would be in voxels: set data.spacing_override",
            stacklevel=2,
        )
    elif expected is not None and not np.allclose(spacing, expected, rtol=0.05):
        warnings.warn(f"{vol.path}: spacing {_fmt(spacing)} differs from expected {_fmt(expected)}", stacklevel=2)
    elif not vol.has_geometry:
        warnings.warn(
            f"{vol.path}: header has no geometry; spacing {_fmt(spacing)} mm and RAS axes are assumed", stacklevel=2
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < 0.05) or np.any(spacing > 20.0):
        raise DataError(vol.path, f"implausible voxel spacing {_fmt(spacing)} mm (expected 0.05..20)")
    return affine


def _same_grid(src: SourceCase, image, other, what: str) -> None:
    if image.array.shape != other.array.shape:
        raise DataError(
            other.path, f"{what} shape {other.array.shape} does not match image {src.image} shape {image.array.shape}"
        )
    if not np.allclose(image.spacing, other.spacing, rtol=1e-3):
        raise DataError(other.path, f"{what} spacing {other.spacing} does not match image {src.image} {image.spacing}")
    # same shape and spacing but flipped/permuted axes or a shifted origin would pair voxels of different places
    cosines = (np.asarray(a.affine)[:3, :3] / np.asarray(a.spacing) for a in (image, other))
    if not np.allclose(*cosines, atol=1e-3):
        raise DataError(other.path, f"{what} axis orientation {_axes(other.affine)} does not match image {src.image} "
                        f"{_axes(image.affine)}; the mask would be misaligned")  # fmt: skip
    shift = np.abs(np.asarray(image.affine)[:3, 3] - np.asarray(other.affine)[:3, 3])
    if np.any(shift > 0.05 * min(image.spacing)):
        raise DataError(other.path, f"{what} origin is {_fmt(shift)} mm away from image {src.image}'s origin; "
                        "the mask would be misaligned")  # fmt: skip


def _axes(affine: np.ndarray) -> str:
    """Orientation code of an affine, e.g. ``RAS`` or ``LPS``."""
    import nibabel as nib

    return "".join(nib.orientations.aff2axcodes(np.asarray(affine)))


def _wall(src: SourceCase, label, cavity: np.ndarray, image, data: DataConfig, spacing) -> np.ndarray:
    if data.wall_mode == "cavity_only":
        return np.zeros_like(cavity)
    if src.wall is not None and src.wall.exists():
        wall = load_label(src.wall, BINARY_VALUES)
        _same_grid(src, image, wall, "wall mask")
        return (wall.array == 1) & ~cavity
    if 2 in src.label_values.values() and src.label_values.get(2) == 2:
        return label.array == 2
    if data.wall_mode == "expert":
        raise DataError(src.wall or src.label, "data.wall_mode='expert' but this case has no wall mask")
    return wall_shell(cavity, spacing, data.wall_thickness_mm)[0]


def convert_case(src: SourceCase, data: DataConfig, expected, out: Path, patient: str) -> tuple[Case, str]:
    """Check and convert one scan into ``out``; returns the case and a hash of its voxels (for duplicates)."""
    image = load_volume(src.image)
    label = load_label(src.label, src.label_values)
    _same_grid(src, image, label, "label")
    affine = _geometry(image, data, expected)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    cavity = label.array == 1
    if not cavity.any():
        raise DataError(src.label, "empty cavity mask: no voxel is labelled LA cavity")
    wall = _wall(src, label, cavity, image, data, spacing)
    merged = cavity.astype(np.uint8)
    merged[wall] = 2
    # integer scans (LA 2018 is uint8) are written back in their own type: lossless and 4x smaller than float32
    stored = image.array.astype(image.stored_dtype) if image.stored_dtype.kind in "iu" else image.array
    img_path = save_nifti(out / "images" / f"{src.case_id}.nii.gz", stored, affine)
    lab_path = save_nifti(out / "labels" / f"{src.case_id}.nii.gz", merged, affine)
    case = Case(
        case_id=src.case_id,
        patient_id=patient,
        image=f"images/{src.case_id}.nii.gz",
        label=f"labels/{src.case_id}.nii.gz",
        shape=tuple(int(v) for v in image.array.shape),
        spacing=spacing,
        sha256_image=sha256_file(img_path),
        sha256_label=sha256_file(lab_path),
        source=str(src.image),
    )
    return case, hashlib.sha256(np.ascontiguousarray(image.array).data).hexdigest()


# settings added after the first adapter version, left out of the cache key at their default so existing
# caches stay valid; patients_dice matters only when patients are inferred
_ADDED_DEFAULTS = {"patients": "csv_or_scan", "exclude": []}


def _cache_key(layout: Layout, data: DataConfig, root: Path, cases: list[SourceCase]) -> str:
    files = [root / PATIENTS_CSV, root / "dataset.json"]
    files += [p for c in cases for p in (c.image, c.label, c.wall) if p is not None]
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]
    settings = {k: v for k, v in to_dict(data).items() if k not in ("phantom", "cache_dir", "patients_dice")}
    settings = {k: v for k, v in settings.items() if _ADDED_DEFAULTS.get(k, object()) != v}
    if data.patients == "infer":
        settings["patients_dice"] = data.patients_dice
    if data.exclude:
        settings["exclude"] = sorted(set(data.exclude))
    return config_hash({"version": ADAPTER_VERSION, "layout": layout.name, "settings": settings, "files": stamp})


def _patient_source(layout: Layout, data: DataConfig, root: Path) -> tuple[str, tuple[str, ...]]:
    """How patient ids are assigned, and the caveat to record (warned here when patients are unknown)."""
    csv_file = root / PATIENTS_CSV
    if data.patients == "infer":
        if csv_file.is_file():
            raise DataError(csv_file, "present but data.patients=infer; set data.patients=csv_or_scan to use it "
                            "or remove it to infer patients")  # fmt: skip
        return "inferred", ()  # the note, with its counts, is made once the manifest exists
    if csv_file.is_file():
        return "patients.csv", ()
    if layout.several_scans_per_patient:
        return "per_scan", (unknown_patients_note(layout.name, root),)
    return "per_scan", ()


def _convert_all(sources: list[SourceCase], data: DataConfig, expected, out: Path, patients: dict) -> list[Case]:
    cases, seen_file, seen_voxels = [], {}, {}
    for src in sources:
        file_hash = sha256_file(src.image) if src.image.is_file() else None
        if file_hash is not None and file_hash in seen_file:
            raise DataError(src.image, f"duplicate scan: same file bytes as {seen_file[file_hash]}; "
                            f"leave one out with data.exclude=[{src.case_id}]")  # fmt: skip
        case, voxel_hash = convert_case(src, data, expected, out, patients[src.case_id])
        if voxel_hash in seen_voxels:
            raise DataError(src.image, f"duplicate scan: same voxels as {seen_voxels[voxel_hash]}; "
                            f"leave one out with data.exclude=[{src.case_id}]")  # fmt: skip
        seen_file[file_hash], seen_voxels[voxel_hash] = src.image, src.image
        cases.append(case)
    return cases


def _with_patients(man: Manifest, data: DataConfig, source: str, notes: tuple[str, ...], home: Path) -> Manifest:
    """The manifest with its patient source and notes; inferred patients get their note (and csv, if new).

    ``home`` is the folder the dataset lives in once built (the note names the csv there).
    """
    if source == "inferred":
        csv_path = man.root / INFERRED_CSV
        if not csv_path.is_file():
            man = apply_inference(man, data.patients_dice, csv_path)
        notes = (*notes, inferred_note(man, data.patients_dice, home / INFERRED_CSV))
    return replace(man, patient_source=source, notes=notes)


def convert(layout: Layout, data: DataConfig, out_dir: str | Path) -> Manifest:
    """Convert a public dataset into the internal layout under ``out_dir`` (cached).

    Args:
        layout: the public layout.
        data: the data section (root, spacing checks, wall mode, patients, excluded cases).
        out_dir: the cache folder; the dataset goes to ``<out_dir>/<layout>_<hash>`` (hash of the settings and
            of the source files' names, sizes and times), built in a temp folder and renamed when complete.

    Returns:
        The converted dataset's ``Manifest``, with ``patient_source`` and ``notes`` set.
    """
    if data.root is None:
        raise ConfigError(f"data.root: required for data.kind={layout.name!r}")
    root = Path(data.root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    found = layout.discover(root)
    if not found:
        raise DataError(root, f"no cases found for the {layout.name!r} layout (see benchmark/data/layouts.py)")
    sources = drop_excluded(found, data.exclude, root)
    if not sources:
        raise ConfigError(f"data.exclude: leaves no case of {root}")
    final = Path(out_dir) / f"{layout.name}_{_cache_key(layout, data, root, sources)}"
    source, notes = _patient_source(layout, data, root)
    cached = verified_manifest(final)
    if cached is not None:
        return _with_patients(cached, data, source, notes, final)
    ids = [s.case_id for s in sources]
    patients = read_patients(root, ids) if source == "patients.csv" else {c: c for c in ids}
    expected = data.expected_spacing or layout.expected_spacing
    with building(final) as tmp:
        cases = _convert_all(sources, data, expected, tmp, patients)
        built = Manifest(root=tmp, dataset=layout.name, cases=tuple(cases))
        _with_patients(built, data, source, notes, final).save()
    return _with_patients(Manifest.load(final), data, source, notes, final)


def _phantom(data: DataConfig, out_dir: str | Path) -> Manifest:
    man = generate_phantom(data.phantom, out_dir)
    cases = tuple(drop_excluded(man.cases, data.exclude, man.root))
    if not cases:
        raise ConfigError(f"data.exclude: leaves no case of {man.root}")
    man = replace(man, cases=cases, patient_source="phantom")
    if data.patients == "infer":
        # inferred from the phantom's own masks, to check inference where the truth is known
        csv_path = man.root / INFERRED_CSV
        man = apply_inference(man, data.patients_dice, csv_path)
        man = replace(man, patient_source="inferred", notes=(inferred_note(man, data.patients_dice, csv_path),))
    return man


ADAPTERS: dict[str, Callable[[DataConfig, str | Path], Manifest]] = {
    "phantom": _phantom,
    "la2018": Layout("la2018", discover_la2018, expected_spacing=(0.625, 0.625, 0.625), several_scans_per_patient=True),
    "msd": Layout("msd", discover_msd),
    "lascarqs": Layout("lascarqs", discover_lascarqs, several_scans_per_patient=True),
    "nnunet": Layout("nnunet", discover_nnunet),
}


def import_dataset(data: DataConfig, out_dir: str | Path) -> Manifest:
    """Bring the configured dataset into the internal layout.

    Args:
        data: the data section; ``data.kind`` picks the adapter.
        out_dir: the cache folder (``data.cache_dir``).

    Returns:
        The dataset's ``Manifest`` (images, labels 0/1/2, patient ids, checksums).
    """
    if data.kind not in ADAPTERS:
        raise ConfigError(f"data.kind: {data.kind!r} is not one of {', '.join(ADAPTERS)}")
    return ADAPTERS[data.kind](data, out_dir)


def list_cases(data: DataConfig) -> list[str]:
    """The case ids the configured dataset would import, found from file names alone (no voxel is read, nothing is
    written): what ``--dry-run`` checks on a login node.

    Args:
        data: the data section (``kind``, ``root``, ``exclude``).
    """
    layout = ADAPTERS.get(data.kind)
    if not isinstance(layout, Layout):
        raise ConfigError(f"data.kind: {data.kind!r} has no file layout to list (the phantom is generated)")
    if not data.root:
        raise ConfigError(f"data.root: a {data.kind} dataset needs its folder (--data PATH)")
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    return [c.case_id for c in drop_excluded(layout.discover(root), data.exclude, root)]
