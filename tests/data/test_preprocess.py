from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.config import PhantomConfig, PreprocessConfig, load_config
from benchmark.data.io import load_volume, save_nifti
from benchmark.data.manifest import Case, Manifest, sha256_file
from benchmark.data.phantom import generate_phantom
from benchmark.data.pipeline import load_arrays, prepare_dataset
from benchmark.data.preprocess import load_case, prep_dir, prepare
from benchmark.errors import DataError

torch.set_num_threads(1)
TINY = PhantomConfig(n_patients=2, scans_per_patient=(1, 2), shape=(32, 32, 16))


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Manifest:
    return generate_phantom(TINY, tmp_path_factory.mktemp("raw"))


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(ijk, dtype=float) + affine[:3, 3]


def test_resize_keeps_field_of_view(raw, tmp_path):
    cfg = PreprocessConfig(shape=(24, 24, 12))
    man = prepare(raw, cfg, tmp_path)
    assert man.root == prep_dir(raw, cfg, tmp_path)
    assert [c.case_id for c in man.cases] == [c.case_id for c in raw.cases]
    assert [c.patient_id for c in man.cases] == [c.patient_id for c in raw.cases]
    src_img, src_lab, src_aff = load_case(raw, raw.cases[0])
    image, label, affine = load_case(man, man.cases[0].case_id)
    assert image.shape == label.shape == (24, 24, 12) and man.cases[0].shape == (24, 24, 12)
    np.testing.assert_allclose(man.cases[0].spacing, (32 * 1.25 / 24, 32 * 1.25 / 24, 16 * 2.5 / 12), rtol=1e-5)
    # the centre of the field of view is the same world point before and after
    np.testing.assert_allclose(_world(affine, [11.5, 11.5, 5.5]), _world(src_aff, [15.5, 15.5, 7.5]), atol=1e-3)
    assert set(np.unique(label)) == {0, 1, 2}
    vol_ratio = (label == 1).sum() * np.prod(man.cases[0].spacing) / ((src_lab == 1).sum() * np.prod(TINY.spacing))
    assert 0.8 < vol_ratio < 1.2  # nearest-neighbour resizing keeps the cavity volume


def test_resample_to_spacing_and_crop_around_the_cavity(raw, tmp_path):
    cfg = PreprocessConfig(shape=(20, 20, 20), spacing=(1.5, 1.5, 1.5))
    man = prepare(raw, cfg, tmp_path)
    _, src_lab, src_aff = load_case(raw, raw.cases[0])
    image, label, affine = load_case(man, man.cases[0])
    assert image.shape == (20, 20, 20)
    np.testing.assert_allclose(man.cases[0].spacing, (1.5, 1.5, 1.5), rtol=1e-5)
    centre_before = _world(src_aff, np.argwhere(src_lab == 1).mean(axis=0))
    centre_after = _world(affine, np.argwhere(label == 1).mean(axis=0))
    np.testing.assert_allclose(centre_after, centre_before, atol=1.5)  # world coordinates survive the crop
    np.testing.assert_allclose(np.argwhere(label == 1).mean(axis=0), 9.5, atol=1.5)  # cavity centred in the window


def test_crop_pads_outside_the_scan(raw, tmp_path):
    cfg = PreprocessConfig(shape=(64, 64, 48), spacing=(1.0, 1.0, 1.0), normalization="minmax")
    image, label, _ = load_case(prepare(raw, cfg, tmp_path), raw.cases[0].case_id)
    assert image.shape == (64, 64, 48)
    assert image[0, 0, 0] == pytest.approx(image.min())  # padding uses the image minimum (air)


@pytest.mark.parametrize("method", ["percentile", "zscore", "minmax"])
def test_normalisation(raw, tmp_path, method):
    cfg = PreprocessConfig(shape=(16, 16, 8), normalization=method)
    man = prepare(raw, cfg, tmp_path)
    image, _, _ = load_case(man, man.cases[0])
    if method == "zscore":
        assert image.mean() == pytest.approx(0.0, abs=1e-4) and image.std() == pytest.approx(1.0, abs=1e-3)
    else:
        assert image.min() == pytest.approx(0.0) and image.max() == pytest.approx(1.0)
    if method == "percentile":
        assert (image == 1.0).mean() > 0.002  # the top 0.5 % is clipped to 1


def test_cache_hit_does_not_rewrite(raw, tmp_path):
    cfg = PreprocessConfig(shape=(16, 16, 8))
    first = prepare(raw, cfg, tmp_path)
    stamp = {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}
    second = prepare(raw, cfg, tmp_path)
    assert second.root == first.root
    assert {p: p.stat().st_mtime_ns for p in second.root.rglob("*")} == stamp
    assert (first.root / "preprocess.yaml").is_file()
    other = prepare(raw, PreprocessConfig(shape=(16, 16, 8), normalization="zscore"), tmp_path)
    assert other.root != first.root


def test_constant_image_is_refused_without_partial_cache(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    img = save_nifti(tmp_path / "ds/images/c.nii.gz", np.full((8, 8, 8), 5.0, np.float32), affine)
    lab = save_nifti(tmp_path / "ds/labels/c.nii.gz", label, affine)
    case = Case(
        case_id="c",
        patient_id="c",
        image="images/c.nii.gz",
        label="labels/c.nii.gz",
        shape=(8, 8, 8),
        spacing=(1.0, 1.0, 1.0),
        sha256_image=sha256_file(img),
        sha256_label=sha256_file(lab),
    )
    man = Manifest(root=tmp_path / "ds", dataset="x", cases=(case,))
    with pytest.raises(DataError, match=r"c\.nii\.gz: image intensities are constant"):
        prepare(man, PreprocessConfig(shape=(4, 4, 4)), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_pipeline_prepare_and_load_arrays(tmp_path):
    cfg = load_config(
        None,
        [
            f"data.cache_dir={tmp_path}",
            "data.phantom.n_patients=2",
            "data.phantom.shape=[32,32,16]",
            "preprocess.shape=[16,16,8]",
        ],
    )
    man = prepare_dataset(cfg)
    assert man.root.parent == tmp_path and man.root.name.startswith("prep_")
    arrays = load_arrays(man)
    assert set(arrays) == {c.case_id for c in man.cases}
    one = arrays[man.cases[0].case_id]
    assert one.image.dtype == np.float32 and one.label.dtype == np.uint8 and one.image.shape == (16, 16, 8)
    assert one.patient_id == man.cases[0].patient_id
    np.testing.assert_allclose(one.affine, load_volume(man.path(man.cases[0], "image")).affine)
    assert list(load_arrays(man, [man.cases[-1].case_id])) == [man.cases[-1].case_id]
    with pytest.raises(DataError, match="unknown case id"):
        load_arrays(man, ["nope"])
