"""The nnU-Net export of a tiny study: nnU-Net v2's raw-dataset rules, the folds, and refusals that write nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config
from benchmark.data.layouts import discover_nnunet
from benchmark.errors import ConfigError, DataError
from benchmark.run.nnunet_export import export_arm
from benchmark.tracking.tracker import NullTracker

REPO = Path(__file__).resolve().parents[1]
ARM = "real+labels2image"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A prepared tiny study whose labels2image generator and three split-0 arms have run."""
    from benchmark.run.kinds.generator import job_params, run_generator
    from benchmark.run.kinds.segmentation import run_segmentation
    from benchmark.study import prepare_study

    root = tmp_path_factory.mktemp("nnunet")
    study = prepare_study(load_config(None, [*tiny_study_overrides(root), "segmentation.target=cavity_wall"]))
    params = job_params(study.cfg, "labels2image", "pool", 0)
    run_generator(study, params, study.generator_dir("labels2image", "pool", 0), NullTracker())
    for arm in ("real", "real+augmented", ARM):
        p = {"split": 0, "seed": 0, "arm": arm, "ratio": 1.0}
        run_segmentation(study, p, study.seg_dir(0, 0, arm), NullTracker())
    return study


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_export_follows_the_nnunet_raw_format(study, tmp_path):
    dataset = export_arm(study.root, 0, ARM, dataset_id=7, out=tmp_path)
    assert dataset == tmp_path / "nnUNet_raw" / "Dataset007_tiny_split0_seed0_real_labels2image"
    assert re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9_]+", dataset.name)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "LGE MRI"} and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "LA cavity": 1, "LA wall": 2}  # consecutive from 0
    images = sorted(p.name for p in (dataset / "imagesTr").iterdir())
    cases = [n.removesuffix("_0000.nii.gz") for n in images]
    assert all(n.endswith("_0000.nii.gz") for n in images) and len(set(cases)) == len(cases)
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    record = json.loads((study.seg_dir(0, 0, ARM) / "arm.json").read_text())
    assert meta["numTraining"] == len(cases) == record["n_real"] + record["n_synthetic"]
    assert sum(c.startswith("synth") for c in cases) == record["n_synthetic"]
    for case in cases:
        image = nib.load(dataset / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(dataset / "labelsTr" / f"{case}.nii.gz")
        assert image.shape == label.shape == tuple(study.cfg.preprocess.shape)
        assert np.allclose(image.affine, label.affine)
        values = np.unique(np.asarray(label.dataobj))
        assert np.issubdtype(values.dtype, np.integer) and set(values.tolist()) <= {0, 1, 2}
    test = study.plan.splits[0].test_cases
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in test)
    assert [c.case_id for c in discover_nnunet(dataset)] == cases  # the suite's own nnU-Net reader takes it back

    folds = json.loads((tmp_path / "nnUNet_preprocessed" / dataset.name / "splits_final.json").read_text())
    owner = {c: a.patient_id for c, a in study.arrays.items()}
    patient = {c: owner[c.split("_", 1)[1]] for c in cases}
    assert 2 <= len(folds) <= 5
    assert sorted(c for f in folds for c in f["val"]) == sorted(c for c in cases if c.startswith("real_"))
    for fold in folds:
        assert set(fold["train"]) <= set(cases) and fold["val"]
        # no training volume is made from a validation patient's scan or label map
        assert {patient[c] for c in fold["train"]}.isdisjoint({patient[c] for c in fold["val"]})

    before = _files(tmp_path)
    assert export_arm(study.root, 0, ARM, dataset_id=7, out=tmp_path) == dataset  # the same export again: a no-op
    assert _files(tmp_path) == before


def test_bad_input_gets_one_line_and_writes_nothing(study, tmp_path):
    with pytest.raises(ConfigError, match=r"--arm: 'real\+spade_ldm' is not an arm .* real, real\+augmented, real\+l"):
        export_arm(study.root, 0, "real+spade_ldm", out=tmp_path)
    with pytest.raises(ConfigError, match=r"--split: 5 is out of range \(study tiny has splits 0\.\.1\)"):
        export_arm(study.root, 5, ARM, out=tmp_path)
    with pytest.raises(ConfigError, match=r"--study: .* is not a study folder"):
        export_arm(tmp_path, 0, ARM, out=tmp_path)
    assert list(tmp_path.iterdir()) == []

    dataset = export_arm(study.root, 0, "real", dataset_id=8, out=tmp_path)
    label = next((dataset / "labelsTr").iterdir())
    label.write_bytes(label.read_bytes()[:-8])  # someone else's content in the folder
    before = _files(tmp_path)
    with pytest.raises(DataError, match=r"Dataset008_tiny_split0_seed0_real: exists with different content \(label"):
        export_arm(study.root, 0, "real", dataset_id=8, out=tmp_path)
    with pytest.raises(DataError, match=r"Dataset008_tiny_split0_seed0_real: holds dataset id 008"):
        export_arm(study.root, 0, ARM, dataset_id=8, out=tmp_path)
    assert _files(tmp_path) == before and not list((tmp_path / "nnUNet_raw").glob(".*"))  # no temp folder left

    cmd = [sys.executable, str(REPO / "launchers" / "export_nnunet.py"), "--study", str(study.root), "--split", "9",
           "--arm", ARM, "--out", str(tmp_path / "cli")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("error: --split: 9 is out of range") and not (tmp_path / "cli").exists()
