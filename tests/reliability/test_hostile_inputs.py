"""Hostile and broken inputs: each gets a clear error naming the file, a non-zero exit, and leaves earlier results
as they were. The table in ``docs/hostile_inputs.md`` lists the same cases.

Data cases run in process on a tiny nnU-Net-layout dataset (one file broken per case) with an earlier, good
import already in the cache, which must stay byte-identical. A few cases also run the launchers as a user
would (``launchers/sweep.py``, ``launchers/train_segmenter.py``): exit code 2 and one ``error: <file>: ...``
line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from study_fixtures import tiny_study_overrides

from benchmark.config import DataConfig, load_config
from benchmark.data.adapters import import_dataset
from benchmark.data.manifest import Manifest
from benchmark.engine.checkpoint import read_state
from benchmark.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
SHAPE, SPACING, N = (16, 16, 8), (1.25, 1.25, 2.5), 4


def _affine(spacing=SPACING, origin=(-5.0, 3.0, 7.0), flip_x: bool = False) -> np.ndarray:
    a = np.diag([-spacing[0] if flip_x else spacing[0], spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def _write(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, _affine() if affine is None else affine), str(path))
    return path


def _case(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    idx = np.indices(SHAPE).astype(float)
    centre = np.asarray(SHAPE) / 2.0 + rng.uniform(-1, 1, 3)
    mask = (sum(((idx[k] - centre[k]) / (SHAPE[k] * 0.25)) ** 2 for k in range(3)) < 1).astype(np.uint8)
    return (100 + 200 * mask + rng.normal(0, 10, SHAPE)).astype(np.float32), mask


def _nnunet(root: Path) -> Path:
    ds = root / "Dataset001_LA"
    for i in range(N):
        image, mask = _case(i)
        _write(ds / "imagesTr" / f"case{i:02d}_0000.nii.gz", image)
        _write(ds / "labelsTr" / f"case{i:02d}.nii.gz", mask)
    meta = {"channel_names": {"0": "LGE"}, "labels": {"background": 0, "LA": 1}, "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return ds


def _tree_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and str(p.relative_to(folder)) not in skip}  # fmt: skip


@pytest.fixture()
def dataset(tmp_path):
    """A good nnU-Net dataset and a cache that already holds an earlier good import of another copy of it."""
    earlier = _nnunet(tmp_path / "earlier")
    cache = tmp_path / "cache"
    import_dataset(DataConfig(kind="nnunet", root=str(earlier)), cache)
    return _nnunet(tmp_path / "data"), cache


def _image(ds: Path, i: int = 1) -> Path:
    return ds / "imagesTr" / f"case{i:02d}_0000.nii.gz"


def _label(ds: Path, i: int = 1) -> Path:
    return ds / "labelsTr" / f"case{i:02d}.nii.gz"


def _truncate(ds):
    p = _image(ds)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def _nan(value):
    def brk(ds):
        image, _ = _case(1)
        image[3, 4, 5] = value
        return _write(_image(ds), image)

    return brk


def _four_d(ds):
    image, _ = _case(1)
    return _write(_image(ds), np.stack([image, image], axis=-1))


def _zero_spacing(ds):
    a = _affine()
    a[:3, 0] = 0.0  # nibabel cannot write this as a qform: store it as the sform only, as some tools do
    img = nib.Nifti1Image(_case(1)[0], None)
    img.set_sform(a, code=1)
    nib.save(img, str(_image(ds)))
    return _image(ds)


def _label_value(value):
    def brk(ds):
        mask = _case(1)[1].copy()
        mask[mask == 1] = value
        return _write(_label(ds), mask)

    return brk


def _other_shape(ds):
    return _write(_label(ds), _case(1)[1][:, :, :6])


def _flipped(ds):
    return _write(_label(ds), _case(1)[1], _affine(flip_x=True))


def _shifted(ds):
    return _write(_label(ds), _case(1)[1], _affine(origin=(0.0, 3.0, 7.0)))


def _duplicate(ds):
    shutil.copy2(_image(ds, 0), _image(ds, 2))
    shutil.copy2(_label(ds, 0), _label(ds, 2))
    return _image(ds, 2)


def _bad_ending(ds):
    meta = json.loads((ds / "dataset.json").read_text())
    (ds / "dataset.json").write_text(json.dumps({**meta, "file_ending": "/../../../*.nii.gz"}))
    return ds / "dataset.json"


DATA_CASES = {
    "truncated NIfTI": (_truncate, r"unreadable or corrupt file"),
    "NaN voxel": (_nan(np.nan), r"1 voxel\(s\) are NaN or infinite"),
    "inf voxel": (_nan(np.inf), r"1 voxel\(s\) are NaN or infinite"),
    "4D volume": (_four_d, r"expected a 3D volume, got shape \(16, 16, 8, 2\)"),
    "zero spacing": (_zero_spacing, r"zero or degenerate voxel spacing"),
    "labels 0/255 (nnU-Net)": (_label_value(255), r"label values 255 are outside the expected set \[0, 1\]"),
    "unexpected label": (_label_value(7), r"label values 7 are outside the expected set \[0, 1\]"),
    "mask of another shape": (_other_shape, r"label shape \(16, 16, 6\) does not match image"),
    "mask of another orientation": (_flipped, r"label axis orientation LAS does not match image .* RAS"),
    "mask with another origin": (_shifted, r"label origin is \(5, 0, 0\) mm away from image"),
    "duplicate scan": (_duplicate, r"duplicate scan: same file bytes as .*case00_0000.nii.gz"),
    "file_ending leaving the folder": (_bad_ending, r"file_ending '/../../../\*.nii.gz' is not a file suffix"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_broken_dataset_file_is_named_and_cache_untouched(case, dataset):
    ds, cache = dataset
    before = _tree_digest(cache)
    broken = DATA_CASES[case][0](ds)
    with pytest.raises(DataError, match=DATA_CASES[case][1]) as err:
        import_dataset(DataConfig(kind="nnunet", root=str(ds)), cache)
    assert str(err.value).startswith(f"{broken}: ")
    assert _tree_digest(cache) == before  # no partial folder, earlier import unchanged


def test_binary_0_255_masks_are_accepted_where_the_layout_uses_them(tmp_path):
    task = tmp_path / "Task02_Heart"
    training = []
    for i in range(3):
        image, mask = _case(i)
        _write(task / "imagesTr" / f"la_{i:03d}.nii.gz", image)
        _write(task / "labelsTr" / f"la_{i:03d}.nii.gz", (mask * 255).astype(np.uint8))
        training.append({"image": f"./imagesTr/la_{i:03d}.nii.gz", "label": f"./labelsTr/la_{i:03d}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({"training": training}))
    man = import_dataset(DataConfig(kind="msd", root=str(task), wall_mode="cavity_only"), tmp_path / "cache")
    label = np.asarray(nib.load(man.path(man.cases[0], "label")).dataobj)
    assert set(np.unique(label)) == {0, 1} and np.array_equal(label, _case(0)[1])


def test_dataset_json_path_escaping_the_root_is_refused(tmp_path):
    task = tmp_path / "data" / "Task02_Heart"
    image, mask = _case(0)
    _write(tmp_path / "outside" / "la_009.nii.gz", image)  # a real file: it would be read without the check
    _write(task / "labelsTr" / "la_009.nii.gz", mask)
    (task / "imagesTr").mkdir()
    training = [{"image": "../../outside/la_009.nii.gz", "label": "./labelsTr/la_009.nii.gz"}]
    (task / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DataError, match=r"path '../../outside/la_009.nii.gz' escapes the dataset root") as err:
        import_dataset(DataConfig(kind="msd", root=str(task)), tmp_path / "cache")
    assert str(err.value).startswith(f"{task / 'dataset.json'}: ")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_manifest_path_escaping_the_root_is_refused(tmp_path, dataset):
    ds, cache = dataset
    good = next(p for p in cache.iterdir() if (p / "manifest.json").is_file())
    payload = json.loads((good / "manifest.json").read_text())
    payload["cases"][0]["image"] = "../../../etc/passwd"
    tampered = tmp_path / "tampered"
    shutil.copytree(good, tampered)
    (tampered / "manifest.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match=r"case case00: path '../../../etc/passwd' escapes the dataset root") as err:
        Manifest.load(tampered)
    assert str(err.value).startswith(f"{tampered / 'manifest.json'}: ")


def test_unknown_config_key_names_file_and_key(tmp_path):
    cfg = tmp_path / "study.yaml"
    cfg.write_text("segmentation:\n  chanels: [4, 8]\n")
    with pytest.raises(ConfigError, match=r"segmentation\.chanels: unknown key; allowed keys here: .*channels") as e:
        load_config(cfg)
    assert str(e.value).startswith(f"{cfg}: ")


def test_yaml_python_tag_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"not valid YAML for the safe loader") as err:
        load_config(cfg)
    assert str(err.value).startswith(f"{cfg}: ") and not marker.exists()


def _split_file(path: Path) -> Path:
    """Patient ph0001 in both train and test of split 0 (a user-supplied file)."""
    train, test = ["ph0000", "ph0001", "ph0002", "ph0003", "ph0004"], ["ph0001", "ph0005", "ph0006", "ph0007"]
    split = {"index": 0, "train_patients": train, "test_patients": test,
             "train_cases": [f"{p}_s1" for p in train], "test_cases": [f"{p}_s1" for p in test]}  # fmt: skip
    path.write_text(json.dumps({"protocol": "per_split", "seed": 0, "splits": [split]}))
    return path


def test_user_split_file_with_a_patient_in_train_and_test_is_refused(tmp_path):
    from benchmark.data.splits import load_splits

    patients = {f"ph{i:04d}": [f"ph{i:04d}_s1"] for i in range(8)}
    path = _split_file(tmp_path / "splits.json")
    with pytest.raises(DataError, match=r"split 0: patients in both train and test: \['ph0001'\]") as err:
        load_splits(path, patients)
    assert str(err.value).startswith(f"{path}: ")
    # listed apart, but one patient's scans on both sides: caught through the case -> patient map
    d = json.loads(path.read_text())
    d["splits"][0]["test_patients"] = ["ph0005", "ph0006", "ph0007"]
    d["splits"][0]["train_cases"] = ["ph0000_s1", "ph0002_s1", "ph0003_s1", "ph0004_s1"]
    d["splits"][0]["train_patients"] = ["ph0000", "ph0002", "ph0003", "ph0004", "ph0001"]
    path.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"split 0: test cases of patients \['ph0001'\] not listed in test"):
        load_splits(path, patients)


class _Payload:
    """Unpickling this runs a shell command: what a planted 'checkpoint' could do to an unsafe loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_checkpoint(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "state.pt", "wb") as fh:
        pickle.dump({"format": "lge-synthbench-checkpoint", "x": _Payload(marker)}, fh)
    return folder / "state.pt"


def test_checkpoint_that_is_not_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "ran"
    state = _plant_checkpoint(tmp_path / "ckpt-000000004", marker)
    with pytest.raises(CheckpointError, match=r"cannot be read as a checkpoint \(Weights only load failed") as err:
        read_state(state.parent)
    assert str(err.value).startswith(f"{state}: ") and not marker.exists()
    other = tmp_path / "ckpt-000000008"
    other.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}}, other / "state.pt")  # a plain state dict from elsewhere
    with pytest.raises(CheckpointError, match=r"is not a lge-synthbench-checkpoint file"):
        read_state(other)


# ------------------------------------------------------------------------------------------ through the launchers


def _earlier_study(out: Path, name: str, base: list[str]) -> None:
    """What a finished earlier run left in a study folder: its config, splits and a job's per-case rows."""
    from benchmark.config import save_config

    study = out / name
    save_config(load_config(None, [*base, f"name={name}"]), study)
    (study / "splits.json").write_text('{"written by": "an earlier run"}\n')
    job = study / "segmentation" / "split0" / "seed0" / "real"
    job.mkdir(parents=True)
    (job / "per_case.csv").write_text("case_id,metric,value\nph0005_s1,dice,0.81\n")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every launcher case started at once (each on its own study); returns results and digests of all folders."""
    from benchmark.data.pipeline import prepare_dataset

    tmp = tmp_path_factory.mktemp("hostile_cli")
    out, cache = tmp / "runs", tmp / "cache"
    base = [*tiny_study_overrides(out, "study", n_splits=1), f"data.cache_dir={cache}"]
    prepare_dataset(load_config(None, base))  # the phantom, imported once for the cases that need it
    marker = tmp / "ran"
    planted = _plant_checkpoint(out / "s_ckpt" / "segmentation" / "split0" / "seed0" / "real" / "checkpoints"
                                / "ckpt-000000004", marker)  # fmt: skip
    evil = tmp / "evil.yaml"
    evil.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    data = _nnunet(tmp / "nnunet")
    truncated = _truncate(data)
    cases = {
        "python tag": (["launchers/sweep.py", "--config", str(evil)], evil),
        "truncated NIfTI": (["launchers/sweep.py", "--data", str(data), "--dataset-kind", "nnunet"], truncated),
        "planted checkpoint": (["launchers/train_segmenter.py", "--arm", "real"], planted),
    }
    names = {k: f"s_{i}" for i, k in enumerate(cases)} | {"planted checkpoint": "s_ckpt"}
    for k, name in names.items():
        if k != "planted checkpoint":
            _earlier_study(out, name, base)
    before = _tree_digest(tmp)
    procs = {k: subprocess.Popen([sys.executable, *args, *base, f"name={names[k]}"], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, (args, _) in cases.items()}  # fmt: skip
    results = {k: (p.wait(timeout=400), *p.communicate(), str(cases[k][1])) for k, p in procs.items()}
    return results, before, _tree_digest(tmp), marker, {k: out / n for k, n in names.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, pattern",
    [
        ("python tag", r"not valid YAML for the safe loader"),
        ("truncated NIfTI", r"unreadable or corrupt file"),
        ("planted checkpoint", r"cannot be read as a checkpoint \(Weights only load failed"),
    ],
)
def test_launcher_exits_2_with_one_error_line(cli, case, pattern):
    import re

    results, _, _, marker, _ = cli
    code, _, err, file = results[case]
    assert code == 2, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err[-2000:]
    assert lines[0].startswith(f"error: {file}: ") and re.search(pattern, lines[0]), lines[0]
    assert not marker.exists()


@pytest.mark.slow
def test_failed_launches_leave_earlier_results_untouched(cli):
    _, before, after, _, _ = cli
    changed = sorted(k for k in before if after.get(k) != before[k] and not k.endswith("/config.yaml"))
    assert changed == []  # earlier per-case rows, splits and the planted checkpoint are byte-identical
    assert any(k.endswith("s_ckpt/segmentation/split0/seed0/real/checkpoints/ckpt-000000004/state.pt") for k in after)


@pytest.mark.slow
def test_failed_launch_keeps_the_study_config(cli):
    _, before, after, _, studies = cli
    for case in ("truncated NIfTI",):
        key = str((studies[case] / "config.yaml").relative_to(studies[case].parents[1]))
        assert after[key] == before[key], case
