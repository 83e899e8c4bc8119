"""Reading and writing volumes (NIfTI via nibabel, NRRD via pynrrd) with the checks every stage relies on.

Every problem is a ``DataError`` that names the file: missing, unreadable or truncated, NaN/inf voxels, not 3D,
degenerate geometry, or label values outside the expected set. Writes are atomic (temp name, then rename), and
``building`` gives the same guarantee to whole cache folders.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmark.atomic import atomic_path, temp_path
from benchmark.data.manifest import MANIFEST_NAME, Manifest, sha256_file
from benchmark.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
# file value -> internal value; the defaults for multi-class (0/1/2) and binary (0/1 or 0/255) label files
LABEL_VALUES: dict[int, int] = {0: 0, 1: 1, 2: 2}
BINARY_VALUES: dict[int, int] = {0: 0, 1: 1, 255: 1}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3D volume with its geometry.

    Args:
        array: voxels (X, Y, Z); float32 for images, uint8 for labels.
        affine: 4x4 voxel -> world (mm, RAS) matrix, float64.
        spacing: voxel size in mm (norms of the affine's columns).
        path: the file it was read from.
        has_geometry: False when the header carried no orientation/spacing and an identity one was assumed.
        stored_dtype: the voxel type in the file (integer scans can be written back losslessly and compactly).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path
    has_geometry: bool = True
    stored_dtype: np.dtype = np.dtype(np.float32)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm: the lengths of the affine's first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    header = img.header
    has_geometry = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    return data, np.asarray(img.affine, dtype=np.float64), has_geometry


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    import nrrd

    data, header = nrrd.read(str(path))
    ndim = data.ndim
    affine = np.eye(4)
    has_geometry = True
    if "space directions" in header and header["space directions"] is not None:
        dirs = np.asarray(header["space directions"], dtype=np.float64)
        rows = [r for r in dirs if np.all(np.isfinite(r))]  # a 'none' row marks a non-spatial axis
        if len(rows) != 3 or any(len(r) != 3 for r in rows):
            raise DataError(path, f"'space directions' does not describe 3 spatial axes: {dirs.tolist()}")
        affine[:3, :3] = np.stack(rows, axis=1)  # NRRD lists one direction vector per axis
        origin = header.get("space origin")
        if origin is not None:
            affine[:3, 3] = np.asarray(origin, dtype=np.float64)
        space = str(header.get("space", "")).lower()
        if space in ("left-posterior-superior", "lps"):
            affine = _LPS_TO_RAS @ affine
    elif "spacings" in header:
        sp = np.asarray(header["spacings"], dtype=np.float64)[:3]
        affine[:3, :3] = np.diag(sp)
    else:
        has_geometry = False
    if ndim < 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    return data, affine, has_geometry


def _read_any(path: str | Path) -> tuple[np.ndarray, np.ndarray, bool, Path]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    suf = _suffix(path)
    if suf not in NIFTI_SUFFIXES + NRRD_SUFFIXES:
        raise DataError(path, f"unsupported format {suf!r}; expected one of {NIFTI_SUFFIXES + NRRD_SUFFIXES}")
    try:
        data, affine, has_geometry = _read_nifti(path) if suf in NIFTI_SUFFIXES else _read_nrrd(path)
    except DataError:
        raise
    except Exception as exc:  # nibabel/pynrrd/zlib raise many types for truncated or corrupt files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(path, f"unreadable or corrupt file ({type(exc).__name__}: {msg})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # a 4D header with one frame is still a 3D scan
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    _check_affine(path, affine)
    return data, affine, has_geometry, path


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(path, f"invalid affine {affine.tolist()}")
    spacing = spacing_of(affine)
    if min(spacing) <= 0 or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, f"zero or degenerate voxel spacing {spacing} in the header")


def load_volume(path: str | Path) -> Volume:
    """Read an image volume (.nii, .nii.gz, .nrrd).

    Args:
        path: the file.

    Returns:
        ``Volume`` with a float32 (X, Y, Z) array and a RAS affine (NRRD's LPS space is converted).
        Raises ``DataError`` naming the file when it is missing, unreadable, not 3D, has NaN/inf voxels or a
        degenerate geometry.
    """
    data, affine, has_geometry, path = _read_any(path)
    array = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(path, f"{bad} voxel(s) are NaN or infinite")
    return Volume(array, affine, spacing_of(affine), path, has_geometry, np.dtype(data.dtype))


def load_label(path: str | Path, values: Mapping[int, int] = LABEL_VALUES) -> Volume:
    """Read a label volume and map its values.

    Args:
        path: the file.
        values: file value -> internal value (e.g. ``BINARY_VALUES`` maps 0/255 masks to 0/1). Any other value
            present in the file is an error that lists the offending values.

    Returns:
        ``Volume`` with a uint8 array of internal values.
    """
    data, affine, has_geometry, path = _read_any(path)
    array = np.asarray(data)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise DataError(path, "label volume contains NaN or infinite values")
        if not np.all(array == np.round(array)):
            raise DataError(path, "label volume contains non-integer values (is this an image, not a mask?)")
    present = [int(v) for v in np.unique(array)]
    unknown = [v for v in present if v not in values]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise DataError(path, f"label values {shown} are outside the expected set {sorted(values)}")
    codes = array if array.dtype.kind in "iu" else array.astype(np.int64)
    if present[0] >= 0 and present[-1] <= 65535:  # direct lookup table: no int64 copy of a large volume
        lut = np.zeros(present[-1] + 1, dtype=np.uint8)
        lut[present] = [values[v] for v in present]
        mapped = lut[codes]
    else:
        lut_out = np.asarray([values[v] for v in present], dtype=np.uint8)
        mapped = lut_out[np.searchsorted(np.asarray(present), codes)]
    return Volume(mapped, affine, spacing_of(affine), path, has_geometry)


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI file atomically (temp file, then rename).

    Args:
        path: target ``.nii`` or ``.nii.gz``.
        array: (X, Y, Z) voxels; stored with their dtype.
        affine: 4x4 voxel -> world matrix (stored as both qform and sform).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:  # nibabel picks the format from the suffix, which the temp name keeps
        nib.save(img, str(tmp))
    return path


def save_png(path: str | Path, fig) -> Path:
    """Save a matplotlib figure atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return path


def verified_manifest(folder: str | Path, warn: bool = True) -> Manifest | None:
    """The manifest in a cache folder if every file it lists exists with its recorded sha256, else None.

    Args:
        folder: the cache folder.
        warn: say so (a warning) when a folder exists but fails the check and will be rebuilt.
    """
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        man = Manifest.load(folder)
        for case in man.cases:
            for which, digest in (("image", case.sha256_image), ("label", case.sha256_label)):
                file = man.path(case, which)
                if not file.is_file() or sha256_file(file) != digest:
                    raise DataError(file, "missing or changed since it was written")
    except DataError as exc:
        if warn:
            warnings.warn(f"{folder}: stale cache is rebuilt ({exc})", stacklevel=2)
        return None
    return man


@contextmanager
def building(final: str | Path) -> Iterator[Path]:
    """Build a cache folder under a temp name and rename it into place only when the body succeeds.

    An interrupted or failing build leaves no partial folder behind, and other cache folders are untouched.

    Args:
        final: the folder the finished cache will live in.

    Yields:
        The temp folder to write into.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        if verified_manifest(final, warn=False) is not None:
            return  # a concurrent build of the same key finished first; keep it, readers may be using it
        if final.exists():  # an invalid earlier build of the same key
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if verified_manifest(final, warn=False) is None:  # not a concurrent builder: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
