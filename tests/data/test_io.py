from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from benchmark.data.io import (
    BINARY_VALUES,
    building,
    load_label,
    load_volume,
    save_nifti,
    spacing_of,
    verified_manifest,
)
from benchmark.errors import DataError


def _affine(spacing=(1.25, 1.25, 2.5), origin=(-5.0, 3.0, 7.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def test_nifti_round_trip_keeps_voxels_and_geometry(tmp_path):
    array = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    path = save_nifti(tmp_path / "x.nii.gz", array, _affine())
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # the temp file was renamed away
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, _affine())
    assert vol.spacing == pytest.approx((1.25, 1.25, 2.5))
    assert vol.array.dtype == np.float32 and vol.has_geometry
    hdr = nib.load(str(path)).header
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1


def test_save_nifti_is_byte_deterministic(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    a = save_nifti(tmp_path / "a.nii.gz", array, _affine()).read_bytes()
    b = save_nifti(tmp_path / "b.nii.gz", array, _affine()).read_bytes()
    assert a == b


def test_nrrd_lps_geometry_becomes_ras(fx, tmp_path):
    path = fx.write_nrrd(tmp_path / "x.nrrd", np.ones((4, 4, 3), dtype=np.float32), spacing=(0.625, 0.625, 1.25))
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([-0.625, -0.625, 1.25]))
    np.testing.assert_allclose(vol.affine[:3, 3], [-10.0, -20.0, -30.0])  # LPS (10, 20, -30) in RAS
    assert vol.spacing == pytest.approx((0.625, 0.625, 1.25))


def test_nrrd_without_geometry_is_flagged(fx, tmp_path):
    vol = load_volume(fx.write_nrrd(tmp_path / "x.nrrd", np.ones((4, 4, 3), dtype=np.uint8), spacing=None))
    assert not vol.has_geometry and vol.spacing == (1.0, 1.0, 1.0)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.nii\.gz: file not found"):
        load_volume(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.nii", "bad.nrrd"])
def test_garbage_file_is_unreadable(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage" * 7)
    with pytest.raises(DataError, match=f"{name}: unreadable or corrupt file") as err:
        load_volume(path)
    assert len(str(err.value).splitlines()) == 1


def test_truncated_gzip_is_unreadable(tmp_path):
    noise = np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32)
    path = save_nifti(tmp_path / "t.nii.gz", noise, _affine())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"t\.nii\.gz: unreadable or corrupt"):
        load_volume(path)


def test_truncated_nrrd_is_unreadable(fx, tmp_path):
    path = fx.write_nrrd(tmp_path / "t.nrrd", np.ones((16, 16, 8), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t\.nrrd: unreadable or corrupt"):
        load_volume(path)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "x.mha").write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported format"):
        load_volume(tmp_path / "x.mha")


def test_nan_voxels_are_refused(tmp_path):
    array = np.ones((4, 4, 4), dtype=np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = save_nifti(tmp_path / "n.nii.gz", array, _affine())
    with pytest.raises(DataError, match=r"n\.nii\.gz: 2 voxel\(s\) are NaN or infinite"):
        load_volume(path)


def test_dimensions(tmp_path):
    squeezed = load_volume(save_nifti(tmp_path / "s.nii.gz", np.ones((4, 4, 3, 1), np.float32), _affine()))
    assert squeezed.array.shape == (4, 4, 3)
    with pytest.raises(DataError, match=r"f\.nii\.gz: expected a 3D volume, got shape \(4, 4, 3, 2\)"):
        load_volume(save_nifti(tmp_path / "f.nii.gz", np.ones((4, 4, 3, 2), np.float32), _affine()))
    with pytest.raises(DataError, match="expected a 3D volume"):
        load_volume(save_nifti(tmp_path / "p.nii.gz", np.ones((4, 4), np.float32), np.eye(4)))


def test_zero_spacing_is_refused(tmp_path):
    path = tmp_path / "z.nii.gz"
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img.header.set_sform(_affine(spacing=(1.0, 0.0, 1.0)), code=1)  # stored as is (a qform would not allow it)
    nib.save(img, str(path))
    with pytest.raises(DataError, match=r"z\.nii\.gz: zero or degenerate voxel spacing"):
        load_volume(path)


def test_label_values_mapped_or_refused(tmp_path):
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 255
    vol = load_label(save_nifti(tmp_path / "m.nii.gz", mask, _affine()), BINARY_VALUES)
    assert vol.array.dtype == np.uint8 and set(np.unique(vol.array)) == {0, 1}
    assert vol.array.sum() == 8
    mask[0, 0, 0], mask[3, 3, 3] = 7, 9
    with pytest.raises(DataError, match=r"m2\.nii\.gz: label values 7, 9 are outside the expected set \[0, 1, 255\]"):
        load_label(save_nifti(tmp_path / "m2.nii.gz", mask, _affine()), BINARY_VALUES)


def test_label_with_fractions_is_refused(tmp_path):
    soft = np.full((4, 4, 4), 0.5, dtype=np.float32)
    with pytest.raises(DataError, match="non-integer values"):
        load_label(save_nifti(tmp_path / "soft.nii.gz", soft, _affine()))


def test_label_keeps_internal_values(tmp_path):
    lab = np.array([0, 1, 2, 1], dtype=np.uint8).reshape(1, 2, 2).repeat(2, axis=0)
    np.testing.assert_array_equal(load_label(save_nifti(tmp_path / "l.nii.gz", lab, _affine())).array, lab)


def test_spacing_of_rotated_affine():
    theta = np.deg2rad(30.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 2.0, 3.0])
    assert spacing_of(affine) == pytest.approx((0.5, 2.0, 3.0))


def test_building_renames_on_success_and_cleans_up_on_failure(tmp_path):
    final = tmp_path / "cache" / "thing"
    with building(final) as tmp:
        (tmp / "a.txt").write_text("done")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "done"
    other = tmp_path / "cache" / "other"
    with pytest.raises(RuntimeError), building(other) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["thing"]


def test_gzip_of_written_nifti_is_valid(tmp_path):
    path = save_nifti(tmp_path / "g.nii.gz", np.zeros((3, 3, 3), np.uint8), _affine())
    assert gzip.decompress(path.read_bytes())[:4] == (348).to_bytes(4, "little")  # NIfTI-1 header size


def _mini_dataset(folder, value: float):
    from benchmark.data.manifest import Case, Manifest, sha256_file

    img = save_nifti(folder / "images/a.nii.gz", np.full((2, 2, 2), value, np.float32), _affine())
    lab = save_nifti(folder / "labels/a.nii.gz", np.ones((2, 2, 2), np.uint8), _affine())
    case = Case(
        case_id="a",
        patient_id="a",
        image="images/a.nii.gz",
        label="labels/a.nii.gz",
        shape=(2, 2, 2),
        spacing=(1.25, 1.25, 2.5),
        sha256_image=sha256_file(img),
        sha256_label=sha256_file(lab),
    )
    Manifest(root=folder, dataset="mini", cases=(case,)).save()


def test_building_keeps_a_build_that_finished_first(tmp_path):
    final = tmp_path / "cache" / "key"
    with building(final) as mine:
        _mini_dataset(mine, 1.0)
        with building(final) as theirs:  # a concurrent job with the same key finishes first
            _mini_dataset(theirs, 2.0)
        kept = (final / "images/a.nii.gz").read_bytes()
    assert (final / "images/a.nii.gz").read_bytes() == kept  # readers of the finished cache are not disturbed
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["key"]
    assert verified_manifest(final) is not None
