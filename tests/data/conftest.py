"""Tiny datasets in every public layout, written by the tests themselves (16x16x8 volumes)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import nrrd
import numpy as np
import pytest

SHAPE = (16, 16, 8)
SPACING = (1.25, 1.25, 2.5)


def blob(seed: int, shape=SHAPE) -> np.ndarray:
    """A binary ellipsoid 'cavity' placed away from the border (different per seed)."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(float)
    centre = np.asarray(shape) / 2.0 + rng.uniform(-1.0, 1.0, 3)
    radii = np.asarray(shape) * rng.uniform(0.2, 0.28, 3)
    return (sum(((idx[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) < 1.0).astype(np.uint8)


def image_for(mask: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return (100.0 + 200.0 * mask + rng.normal(0.0, 10.0, mask.shape)).astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-5.0, 3.0, 7.0)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_nrrd(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {}
    if spacing is not None:
        header = {
            "space": "left-posterior-superior",
            "space directions": np.diag(np.asarray(spacing, dtype=float)),
            "space origin": np.array([10.0, 20.0, -30.0]),
        }
    nrrd.write(str(path), array, header)
    return path


def _la2018(root: Path, n: int, spacing, walls: bool) -> Path:
    for i in range(n):
        case = root / ("Training Set" if i % 2 == 0 else "Testing Set") / f"CASE{i:02d}"
        mask = blob(i)
        write_nrrd(case / "lgemri.nrrd", image_for(mask, i), spacing)
        write_nrrd(case / "laendo.nrrd", (mask * 255).astype(np.uint8), spacing)
        if walls and i == 0:
            from scipy import ndimage

            wall = ndimage.binary_dilation(mask, iterations=1) & ~mask.astype(bool)
            write_nrrd(case / "lawall.nrrd", (wall * 255).astype(np.uint8), spacing)
    return root


def _msd(root: Path, n: int) -> Path:
    task = root / "Task02_Heart"
    training = []
    for i in range(n):
        name = f"la_{i + 3:03d}.nii.gz"
        mask = blob(i)
        write_nifti(task / "imagesTr" / name, image_for(mask, i))
        write_nifti(task / "labelsTr" / name, mask)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (task / "imagesTr" / "._la_003.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (task / "dataset.json").write_text(json.dumps({"name": "LeftAtrium", "training": training}))
    return task


def _lascarqs(root: Path, n: int) -> Path:
    for i in range(n):
        mask = blob(i)
        write_nifti(root / "train_data" / f"p{i + 1}" / "enhanced.nii.gz", image_for(mask, i))
        write_nifti(root / "train_data" / f"p{i + 1}" / "atriumSegImgMO.nii.gz", mask.astype(np.int16) * 420)
    return root


def _nnunet(root: Path, n: int) -> Path:
    from scipy import ndimage

    ds = root / "Dataset101_LeftAtrium"
    for i in range(n):
        mask = blob(i)
        wall = ndimage.binary_dilation(mask, iterations=1) & ~mask.astype(bool)
        write_nifti(ds / "imagesTr" / f"case{i:03d}_0000.nii.gz", image_for(mask, i))
        write_nifti(ds / "labelsTr" / f"case{i:03d}.nii.gz", (mask + 2 * wall).astype(np.uint8))
    meta = {"channel_names": {"0": "LGE"}, "labels": {"background": 0, "LA": 1, "wall": 2}, "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return root


def make_layout(kind: str, root: Path, n: int = 3, spacing=SPACING, walls: bool = True) -> Path:
    """Write a fixture dataset in one of the four public layouts; returns the folder to use as ``data.root``."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "la2018":
        return _la2018(root, n, spacing, walls)
    if kind == "msd":
        return _msd(root, n)
    if kind == "lascarqs":
        return _lascarqs(root, n)
    if kind == "nnunet":
        return _nnunet(root, n)
    raise ValueError(kind)


@pytest.fixture
def fx() -> SimpleNamespace:
    """The fixture writers (a fixture rather than an import, so the tests work under any pytest import mode)."""
    return SimpleNamespace(
        SHAPE=SHAPE,
        SPACING=SPACING,
        blob=blob,
        image_for=image_for,
        write_nifti=write_nifti,
        write_nrrd=write_nrrd,
        make_layout=make_layout,
    )
