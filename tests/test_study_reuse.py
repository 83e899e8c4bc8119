"""A study folder re-used with other data is refused, naming both data and how to start a new study, before
anything in the folder is touched; the same data again is accepted."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config
from benchmark.data.pipeline import prepare_dataset
from benchmark.errors import DataError
from benchmark.study import Study, prepare_study

REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``folder``: content hash (files) and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                     p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }  # fmt: skip


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A prepared study of an 8-patient phantom (data seed 0): its overrides, folder and data digest."""
    root = tmp_path_factory.mktemp("reuse")
    base = tiny_study_overrides(root, n_splits=1)
    study = prepare_study(load_config(None, base))
    return base, study.root, study.manifest.digest()


def _message(folder: Path, old: str, new: str) -> str:
    return (
        f"{folder}: holds a study of other data: its splits.json was drawn from {old}, this run's data is {new}; "
        f"start a new study with name=<new name> or output_dir=<another folder> (or delete {folder} to redo this one)"
    )


def test_same_data_again_is_accepted(earlier):
    base, folder, digest = earlier
    before = _snapshot(folder)
    study = prepare_study(load_config(None, base))
    assert study.manifest.digest() == digest and study.root == folder
    after = _snapshot(folder)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


@pytest.mark.parametrize("change", ["data.phantom.seed=1", "data.phantom.n_patients=9"])
def test_other_phantom_is_refused_and_the_folder_untouched(earlier, change):
    base, folder, old = earlier
    cfg = load_config(None, [*base, change])
    new = prepare_dataset(cfg).digest()
    assert new != old
    before = _snapshot(folder)
    with pytest.raises(DataError) as info:
        prepare_study(cfg)
    expected = _message(folder, f"phantom data (manifest digest {old})", f"phantom data (manifest digest {new})")
    assert str(info.value) == expected
    assert _snapshot(folder) == before


def test_the_earlier_dataset_kind_and_root_are_named(earlier, tmp_path):
    base, folder, old = earlier
    copy = tmp_path / "tiny"  # the earlier study as if it had been run on LA 2018 at /data/la2018
    copy.mkdir()
    (copy / "splits.json").write_bytes((folder / "splits.json").read_bytes())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["data"] |= {"kind": "la2018", "root": "/data/la2018"}
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(None, [*base, f"output_dir={tmp_path}", "data.phantom.seed=2"])
    new = Study(cfg).manifest.digest()
    before = _snapshot(copy)
    with pytest.raises(DataError) as info:
        prepare_study(cfg)
    assert str(info.value) == _message(
        copy, f"la2018 data at /data/la2018 (manifest digest {old})", f"phantom data (manifest digest {new})"
    )
    assert _snapshot(copy) == before


@pytest.mark.slow
def test_sweep_launcher_prints_one_error_line(earlier):
    base, folder, old = earlier
    before = _snapshot(folder)
    argv = [
        sys.executable,
        str(REPO / "launchers" / "sweep.py"),
        *base,
        "data.phantom.seed=1",
        "tracking.enabled=false",
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: holds a study of other data: "), lines
    assert f"drawn from phantom data (manifest digest {old}), this run's data is phantom data" in lines[0]
    assert "name=<new name> or output_dir=<another folder>" in lines[0]
    assert _snapshot(folder) == before
