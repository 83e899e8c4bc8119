"""Preprocessing: every case brought to the study grid and intensity-normalised, cached on disk.

Two ways to reach the study grid (``PreprocessConfig``):

- ``spacing: null``: the whole scan is resized to ``shape`` (image: area averaging along shrinking axes, then
  trilinear along growing ones; label: nearest);
  the field of view is kept, so the new spacing is ``old spacing * old shape / shape``.
- ``spacing: [sx, sy, sz]``: the scan is resampled to that voxel size (image bilinear, label nearest) and then
  cropped/padded to ``shape`` around the centre of the LA cavity (padding uses the image minimum), which is how
  real scans with a large field of view are brought to a small study grid.

Then the image (never the label) is normalised: ``percentile`` (clip to the configured percentiles, scale to
[0, 1]), ``zscore`` or ``minmax`` ([0, 1]). The affine follows every step, so world coordinates are preserved.
The result lives in ``<cache_dir>/prep_<hash>``, the hash covering the input manifest's digest and the section.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from benchmark.config import PreprocessConfig, config_hash, save_config
from benchmark.data.io import LABEL_VALUES, building, load_label, load_volume, save_nifti, spacing_of, verified_manifest
from benchmark.data.manifest import Case, Manifest, sha256_file
from benchmark.errors import DataError

PREP_VERSION = 1


def prep_dir(manifest: Manifest, cfg: PreprocessConfig, cache_dir: str | Path) -> Path:
    """The cache folder for ``manifest`` preprocessed with ``cfg``."""
    key = hashlib.sha256(f"{PREP_VERSION}:{manifest.digest()}:{config_hash(cfg)}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"prep_{key}"


def _meta(array: np.ndarray, affine: np.ndarray):
    from monai.data import MetaTensor

    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array[None])), affine=torch.as_tensor(affine))


def _crop_or_pad(image, label, affine, shape, fill: float):
    """Window of ``shape`` centred on the cavity (label 1); voxels outside the scan get ``fill`` / 0."""
    cavity = np.argwhere(label == 1)
    centre = cavity.mean(axis=0) if len(cavity) else (np.asarray(label.shape) - 1) / 2.0
    start = np.round(centre - (np.asarray(shape) - 1) / 2.0).astype(int)
    out_img = np.full(shape, fill, dtype=np.float32)
    out_lab = np.zeros(shape, dtype=np.uint8)
    src, dst = [], []
    for i in range(3):
        lo, hi = max(start[i], 0), min(start[i] + shape[i], label.shape[i])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[i], hi - start[i]))
    out_img[tuple(dst)] = image[tuple(src)]
    out_lab[tuple(dst)] = label[tuple(src)]
    shift = np.eye(4)
    shift[:3, 3] = start
    return out_img, out_lab, affine @ shift


def to_grid(image: np.ndarray, label: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig):
    """Resample one case to the study grid with MONAI transforms.

    Args:
        image: float32 (X, Y, Z).
        label: uint8 (X, Y, Z), 0/1/2.
        affine: 4x4 voxel -> world.
        cfg: target shape, optional target spacing.

    Returns:
        (image, label, affine) on the study grid.
    """
    from monai.transforms import Resize, Spacing

    img, lab = _meta(image.astype(np.float32), affine), _meta(label.astype(np.float32), affine)
    if cfg.spacing is None:
        # shrink with area averaging (no aliasing, no border darkening), then grow any axis that needs it
        shrunk = tuple(min(a, b) for a, b in zip(image.shape, cfg.shape, strict=True))
        if shrunk != tuple(image.shape):
            img = Resize(shrunk, mode="area")(img)
        if shrunk != tuple(cfg.shape):
            img = Resize(cfg.shape, mode="trilinear")(img)
        lab = Resize(cfg.shape, mode="nearest-exact")(lab)
    else:
        img = Spacing(pixdim=cfg.spacing, mode="bilinear", padding_mode="border")(img)
        lab = Spacing(pixdim=cfg.spacing, mode="nearest", padding_mode="zeros")(lab)
    new_affine = np.asarray(img.affine, dtype=np.float64)
    image_out = np.asarray(img.array[0], dtype=np.float32)
    label_out = np.rint(np.asarray(lab.array[0])).astype(np.uint8)
    if cfg.spacing is not None:
        image_out, label_out, new_affine = _crop_or_pad(
            image_out, label_out, new_affine, tuple(cfg.shape), float(image_out.min())
        )
    return image_out, label_out, new_affine


def normalise(image: np.ndarray, cfg: PreprocessConfig, path: str | Path = "<array>") -> np.ndarray:
    """Intensity normalisation (MONAI transforms): ``percentile``, ``zscore`` or ``minmax``.

    Args:
        image: float32 volume.
        cfg: the method and, for ``percentile``, the clip percentiles.
        path: named in the error raised for a constant image.

    Returns:
        The normalised float32 volume.
    """
    from monai.transforms import NormalizeIntensity, ScaleIntensity, ScaleIntensityRangePercentiles

    lo, hi = np.percentile(image, cfg.percentiles) if cfg.normalization == "percentile" else (image.min(), image.max())
    if not hi - lo > 1e-6 * max(1.0, abs(float(hi))):  # resampling leaves rounding noise on a constant image
        raise DataError(path, f"image intensities are constant over the normalisation range ({lo} .. {hi})")
    if cfg.normalization == "percentile":
        tf = ScaleIntensityRangePercentiles(*cfg.percentiles, b_min=0.0, b_max=1.0, clip=True)
    elif cfg.normalization == "zscore":
        tf = NormalizeIntensity()
    else:
        tf = ScaleIntensity(minv=0.0, maxv=1.0)
    return np.asarray(tf(image), dtype=np.float32)


def _prepare_case(manifest: Manifest, case: Case, cfg: PreprocessConfig, out: Path) -> Case:
    image, label, affine = load_case(manifest, case)
    image, label, affine = to_grid(image, label, affine, cfg)
    if not np.any(label == 1):
        raise DataError(manifest.path(case, "label"), "the LA cavity vanished when resampling to the study grid")
    image = normalise(image, cfg, manifest.path(case, "image"))
    img_path = save_nifti(out / "images" / f"{case.case_id}.nii.gz", image, affine)
    lab_path = save_nifti(out / "labels" / f"{case.case_id}.nii.gz", label, affine)
    return Case(
        case_id=case.case_id,
        patient_id=case.patient_id,
        image=f"images/{case.case_id}.nii.gz",
        label=f"labels/{case.case_id}.nii.gz",
        shape=tuple(int(v) for v in image.shape),
        spacing=spacing_of(affine),
        sha256_image=sha256_file(img_path),
        sha256_label=sha256_file(lab_path),
        source=str(manifest.path(case, "image")),
    )


def prepare(manifest: Manifest, cfg: PreprocessConfig, cache_dir: str | Path) -> Manifest:
    """Preprocess every case of a dataset (cached).

    Args:
        manifest: the dataset in the internal layout (from an adapter).
        cfg: the preprocess section.
        cache_dir: where ``prep_<hash>/`` lives; built in a temp folder and renamed when complete.

    Returns:
        The preprocessed dataset's ``Manifest`` (same case and patient ids).
    """
    final = prep_dir(manifest, cfg, cache_dir)
    cached = verified_manifest(final)
    if cached is not None:
        return cached
    with building(final) as tmp:
        cases = tuple(_prepare_case(manifest, case, cfg, tmp) for case in manifest.cases)
        Manifest(root=tmp, dataset=f"{manifest.dataset}/prep", cases=cases).save()
        save_config(cfg, tmp, "preprocess.yaml")
        (tmp / "source.txt").write_text(f"{manifest.root.resolve()}\n{manifest.digest()}\n")
    return Manifest.load(final)


def load_case(manifest: Manifest, case: Case | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one case of a dataset in the internal layout.

    Args:
        manifest: the dataset.
        case: a ``Case`` or its id.

    Returns:
        (image float32 (X, Y, Z), label uint8 0/1/2, affine 4x4).
    """
    if isinstance(case, str):
        cases = manifest.by_id()
        if case not in cases:
            raise DataError(manifest.root / "manifest.json", f"unknown case id {case!r}")
        case = cases[case]
    image = load_volume(manifest.path(case, "image"))
    label = load_label(manifest.path(case, "label"), LABEL_VALUES)
    if image.array.shape != label.array.shape:
        raise DataError(label.path, f"shape {label.array.shape} does not match image {image.path}")
    return image.array, label.array, image.affine
