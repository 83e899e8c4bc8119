from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark.config import DataConfig, PhantomConfig
from benchmark.data.adapters import ADAPTERS, import_dataset
from benchmark.data.io import BINARY_VALUES, load_label, verified_manifest
from benchmark.data.manifest import sha256_file
from benchmark.errors import ConfigError, DataError

LAYOUTS = ["la2018", "msd", "lascarqs", "nnunet"]


def dcfg(kind: str, root: Path, **kw) -> DataConfig:
    """A data section for a fixture (whose voxels are 1.25 x 1.25 x 2.5 mm unless a test says otherwise)."""
    kw.setdefault("expected_spacing", (1.25, 1.25, 2.5))
    return DataConfig(kind=kind, root=str(root), **kw)


def first_files(kind: str, root: Path) -> tuple[Path, Path]:
    """Image and label file of the first case (case index 0) of a fixture layout."""
    return {
        "la2018": (root / "Training Set/CASE00/lgemri.nrrd", root / "Training Set/CASE00/laendo.nrrd"),
        "msd": (root / "imagesTr/la_003.nii.gz", root / "labelsTr/la_003.nii.gz"),
        "lascarqs": (root / "train_data/p1/enhanced.nii.gz", root / "train_data/p1/atriumSegImgMO.nii.gz"),
        "nnunet": (
            root / "Dataset101_LeftAtrium/imagesTr/case000_0000.nii.gz",
            root / "Dataset101_LeftAtrium/labelsTr/case000.nii.gz",
        ),
    }[kind]


def write_like(fx, path: Path, array: np.ndarray) -> None:
    (fx.write_nrrd if path.name.endswith(".nrrd") else fx.write_nifti)(path, array)


def test_registry_lists_every_layout():
    assert set(ADAPTERS) == {"phantom", "la2018", "msd", "lascarqs", "nnunet"}


@pytest.mark.parametrize("kind", LAYOUTS)
def test_adapter_converts_fixture(kind, fx, tmp_path):
    root = fx.make_layout(kind, tmp_path / "src")
    data = DataConfig(kind=kind, root=str(root), wall_mode="derive", expected_spacing=fx.SPACING)
    man = import_dataset(data, tmp_path / "cache")
    assert len(man.cases) == 3
    assert man.root.parent == tmp_path / "cache" and man.root.name.startswith(f"{kind}_")
    for i, case in enumerate(sorted(man.cases, key=lambda c: c.case_id)):
        assert case.patient_id == case.case_id
        assert case.shape == (16, 16, 8)
        np.testing.assert_allclose(case.spacing, fx.SPACING)
        assert sha256_file(man.path(case, "image")) == case.sha256_image
        label = load_label(man.path(case, "label")).array
        np.testing.assert_array_equal(label == 1, fx.blob(i).astype(bool))  # 0/255, 0/420, 0/1 all map to 1
        assert (label == 2).any()  # expert (la2018 case 0, nnunet) or derived wall
        image = np.asarray(nib.load(str(man.path(case, "image"))).dataobj)
        np.testing.assert_allclose(image, fx.image_for(fx.blob(i), i), rtol=1e-6)


def test_la2018_nrrd_geometry_is_converted_to_ras(fx, tmp_path):
    root = fx.make_layout("la2018", tmp_path / "src")
    man = import_dataset(dcfg("la2018", root), tmp_path / "cache")
    affine = nib.load(str(man.path(man.cases[0], "image"))).affine
    np.testing.assert_allclose(np.diag(affine)[:3], [-1.25, -1.25, 2.5])
    np.testing.assert_allclose(affine[:3, 3], [-10.0, -20.0, -30.0])


def test_wall_modes(fx, tmp_path):
    root = fx.make_layout("la2018", tmp_path / "src")
    expert_wall = load_label(root / "Training Set/CASE00/lawall.nrrd", BINARY_VALUES).array == 1
    man = import_dataset(dcfg("la2018", root, wall_thickness_mm=2.5), tmp_path / "c1")
    labels = {c.case_id: load_label(man.path(c, "label")).array for c in man.cases}
    np.testing.assert_array_equal(labels["CASE00"] == 2, expert_wall)
    from scipy import ndimage

    derived = labels["CASE01"]
    dist = ndimage.distance_transform_edt(derived != 1, sampling=fx.SPACING)
    assert dist[derived == 2].max() <= 2.5 + 1e-6 and (derived == 2).sum() > 0
    assert np.all(derived[(dist > 0) & (dist <= 2.5)] == 2)

    man = import_dataset(dcfg("la2018", root, wall_mode="cavity_only"), tmp_path / "c2")
    assert all(not (load_label(man.path(c, "label")).array == 2).any() for c in man.cases)

    with pytest.raises(DataError, match="CASE01/lawall.nrrd.*wall_mode='expert'"):
        import_dataset(dcfg("la2018", root, wall_mode="expert"), tmp_path / "c3")
    assert not (tmp_path / "c3").exists() or list((tmp_path / "c3").iterdir()) == []


def test_patients_csv_groups_scans(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    (root / "patients.csv").write_text("case_id,patient_id\nla_003,P1\nla_004,P1\nla_005,P2\n")
    man = import_dataset(DataConfig(kind="msd", root=str(root)), tmp_path / "cache")
    assert man.patients() == {"P1": ["la_003", "la_004"], "P2": ["la_005"]}
    (root / "patients.csv").write_text("case_id,patient_id\nla_003,P1\n")
    with pytest.raises(DataError, match="patients.csv: no patient_id for case.*la_004"):
        import_dataset(DataConfig(kind="msd", root=str(root)), tmp_path / "cache")


def test_nnunet_root_may_be_parent_or_dataset_folder(fx, tmp_path):
    parent = fx.make_layout("nnunet", tmp_path / "raw")
    a = import_dataset(DataConfig(kind="nnunet", root=str(parent)), tmp_path / "cache")
    b = import_dataset(DataConfig(kind="nnunet", root=str(parent / "Dataset101_LeftAtrium")), tmp_path / "cache")
    assert [c.sha256_label for c in a.cases] == [c.sha256_label for c in b.cases]
    assert sorted(c.case_id for c in a.cases) == ["case000", "case001", "case002"]


def test_identity_spacing_warns_and_override_applies(fx, tmp_path):
    root = fx.make_layout("la2018", tmp_path / "src", spacing=None)  # headers without geometry
    with pytest.warns(UserWarning, match=r"lgemri\.nrrd: header spacing is \(1, 1, 1\).*0\.625"):
        man = import_dataset(DataConfig(kind="la2018", root=str(root)), tmp_path / "cache")
    assert man.cases[0].spacing == (1.0, 1.0, 1.0)
    override = DataConfig(kind="la2018", root=str(root), spacing_override=(0.625, 0.625, 0.625))
    with pytest.warns(UserWarning, match="spacing_override"):
        man = import_dataset(override, tmp_path / "cache")
    np.testing.assert_allclose(man.cases[0].spacing, (0.625, 0.625, 0.625))
    affine = nib.load(str(man.path(man.cases[0], "image"))).affine
    np.testing.assert_allclose(np.abs(np.diag(affine))[:3], 0.625)


def test_consistent_spacing_does_not_warn(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_dataset(DataConfig(kind="msd", root=str(root), expected_spacing=fx.SPACING), tmp_path / "cache")


def test_duplicate_scan_is_refused(fx, tmp_path):
    root = fx.make_layout("lascarqs", tmp_path / "src")
    shutil.copytree(root / "train_data/p1", root / "train_data/p9")
    with pytest.raises(DataError, match=r"p9/enhanced.nii.gz: duplicate scan: same file bytes as .*p1/enhanced"):
        import_dataset(DataConfig(kind="lascarqs", root=str(root)), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_is_reused_without_rewriting(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    data = DataConfig(kind="msd", root=str(root))
    first = import_dataset(data, tmp_path / "cache")
    stamp = {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}
    second = import_dataset(data, tmp_path / "cache")
    assert second.root == first.root
    assert {p: p.stat().st_mtime_ns for p in second.root.rglob("*")} == stamp


def test_config_problems():
    with pytest.raises(ConfigError, match="data.root"):
        import_dataset(DataConfig(kind="msd"), "unused")


def test_missing_root_and_empty_layout(tmp_path):
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        import_dataset(DataConfig(kind="la2018", root=str(tmp_path / "nowhere")), tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cases found"):
        import_dataset(DataConfig(kind="lascarqs", root=str(tmp_path / "empty")), tmp_path / "cache")


def test_phantom_adapter(tmp_path):
    data = DataConfig(kind="phantom", phantom=PhantomConfig(n_patients=2, shape=(24, 24, 12)))
    man = import_dataset(data, tmp_path)
    assert {c.patient_id for c in man.cases} == {"ph0000", "ph0001"}


# ---------------------------------------------------------------------------------------------------------
# bad input: a DataError naming the file, no partial cache, earlier caches intact


def _break(fx, problem: str, image: Path, label: Path) -> Path:
    """Damage the first case; returns the file the error must name."""
    if problem == "missing_label":
        label.unlink()
        return label
    if problem == "corrupt_image":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return image
    if problem == "corrupt_label":
        label.write_bytes(b"this is not a volume")
        return label
    mask = fx.blob(0)
    if problem == "shape_mismatch":
        write_like(fx, label, mask[:, :, :7])
    elif problem == "bad_values":
        bad = mask.copy()
        bad[0, 0, 0] = 7
        write_like(fx, label, bad)
    elif problem == "empty_cavity":
        write_like(fx, label, np.zeros_like(mask))
    return label


PROBLEMS = ["missing_label", "corrupt_image", "corrupt_label", "shape_mismatch", "bad_values", "empty_cavity"]
MESSAGES = {
    "missing_label": "file not found",
    "corrupt_image": "unreadable or corrupt",
    "corrupt_label": "unreadable or corrupt",
    "shape_mismatch": "shape .* does not match image",
    "bad_values": "label values 7 are outside the expected set",
    "empty_cavity": "empty cavity mask",
}


@pytest.mark.parametrize("kind", ["la2018", "msd", "nnunet"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_names_file_and_leaves_no_partial_cache(kind, problem, fx, tmp_path):
    root = fx.make_layout(kind, tmp_path / "src")
    data = dcfg(kind, root)
    cache = tmp_path / "cache"
    good = import_dataset(data, cache)
    good_files = {p: p.read_bytes() for p in good.root.rglob("*") if p.is_file()}

    image, label = first_files(kind, root)
    culprit = _break(fx, problem, image, label)
    with pytest.raises(DataError) as err:
        import_dataset(data, cache)
    message = str(err.value)
    assert message.startswith(str(culprit.resolve())), message
    assert len(message.splitlines()) == 1
    assert re.search(MESSAGES[problem], message), message
    if problem == "shape_mismatch":
        assert image.name in message
    assert [p.name for p in cache.iterdir()] == [good.root.name]  # nothing partial, no temp folder
    assert verified_manifest(good.root) is not None
    assert {p: p.read_bytes() for p in good.root.rglob("*") if p.is_file()} == good_files


def test_implausible_spacing_is_refused(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    mask = fx.blob(0)
    fx.write_nifti(root / "imagesTr/la_003.nii.gz", fx.image_for(mask, 0), spacing=(50.0, 50.0, 50.0))
    fx.write_nifti(root / "labelsTr/la_003.nii.gz", mask, spacing=(50.0, 50.0, 50.0))
    with pytest.raises(DataError, match=r"la_003.nii.gz: implausible voxel spacing \(50, 50, 50\) mm"):
        import_dataset(dcfg("msd", root, expected_spacing=None), tmp_path / "cache")


def test_missing_geometry_is_reported(fx, tmp_path):
    root = fx.make_layout("la2018", tmp_path / "src", spacing=None)
    with pytest.warns(UserWarning, match=r"lgemri\.nrrd: header has no geometry; spacing \(1, 1, 1\) mm"):
        import_dataset(dcfg("la2018", root, expected_spacing=(1.0, 1.0, 1.0)), tmp_path / "cache")
