"""Tiny cases for the segmentation tests: a bright cube (cavity) with a one-voxel shell (wall)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark.data.splits import Split


def toy_case(seed: int, shape=(16, 16, 16)) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """An image/label pair whose cavity is a cube of random size and position."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    lo = rng.integers(3, 6, size=3)
    hi = lo + rng.integers(5, 8, size=3)
    label[lo[0] - 1 : hi[0] + 1, lo[1] - 1 : hi[1] + 1, lo[2] - 1 : hi[2] + 1] = 2
    label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    image = np.where(label == 1, 0.8, np.where(label == 2, 0.1, 0.4)).astype(np.float32)
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    return image, label, (1.0, 1.0, 1.0)


@pytest.fixture
def cases() -> dict[str, tuple]:
    """Eight cases of four patients (two scans each): p0..p2 train, p3 test."""
    return {f"p{i // 2}_s{i % 2 + 1}": toy_case(i) for i in range(8)}


@pytest.fixture
def split() -> Split:
    return Split(
        index=0,
        train_patients=("p0", "p1", "p2"),
        test_patients=("p3",),
        train_cases=("p0_s1", "p0_s2", "p1_s1", "p1_s2", "p2_s1", "p2_s2"),
        test_cases=("p3_s1", "p3_s2"),
    )


def write_samples(
    folder: Path, cases: dict, source_ids, *, generator="pix2pix3d", protocol="per_split", train_ids=None, seed=0
) -> Path:
    """A generator output folder: one NIfTI per source case plus samples.json."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, case_id in enumerate(source_ids):
        image = cases[case_id][0] + 0.01 * (k + 1)  # distinguishable from the real image
        name = f"synth_{case_id}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(folder / name))
        samples.append({"case_id": case_id, "path": name})
    payload = {
        "generator": generator,
        "seed": seed,
        "protocol": protocol,
        "train_case_ids": list(train_ids if train_ids is not None else source_ids),
        "samples": samples,
    }
    (folder / "samples.json").write_text(json.dumps(payload))
    return folder


@pytest.fixture
def make_samples(cases):
    """``make_samples(folder, source_ids, **kw)`` writes a generator output folder of the toy cases."""

    def make(folder: Path, source_ids, **kw) -> Path:
        return write_samples(folder, cases, source_ids, **kw)

    return make
