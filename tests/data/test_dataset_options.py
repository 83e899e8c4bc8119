"""Datasets as users point at them: folders of symbolic links, cases left out, and the cache key of each setting."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import DataConfig, SplitsConfig, config_hash, to_dict
from benchmark.data.adapters import ADAPTER_VERSION, ADAPTERS, _cache_key, import_dataset
from benchmark.data.layouts import find_files
from benchmark.data.splits import make_splits
from benchmark.errors import ConfigError, DataError

SPACING = (1.25, 1.25, 2.5)


def _data(kind: str, root: Path, **kw) -> DataConfig:
    return DataConfig(kind=kind, root=str(root), expected_spacing=SPACING, **kw)


def _quiet_import(data: DataConfig, cache: Path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no patients.csv")
        return import_dataset(data, cache)


def test_folder_of_links_to_case_folders_reads_like_the_original(fx, tmp_path):
    shared = fx.make_layout("la2018", tmp_path / "shared", n=5)
    subset = tmp_path / "subset"
    subset.mkdir()
    picked = {"CASE01": "Testing Set", "CASE02": "Training Set", "CASE04": "Training Set"}
    for case, split in picked.items():
        (subset / case).symlink_to(shared / split / case, target_is_directory=True)
    (subset / "loop").symlink_to(subset, target_is_directory=True)  # a link back up must not loop
    for p in [*shared.rglob("*"), shared]:  # the shared copy is read-only
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        man = _quiet_import(_data("la2018", subset), tmp_path / "cache")
        original = _quiet_import(_data("la2018", shared), tmp_path / "cache")
    finally:
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert sorted(c.case_id for c in man.cases) == sorted(picked)
    ours = {c.case_id: (c.sha256_image, c.sha256_label) for c in man.cases}
    assert ours == {c.case_id: (c.sha256_image, c.sha256_label) for c in original.cases if c.case_id in picked}
    assert {c.case_id: c.source for c in man.cases}["CASE01"] == str(subset / "CASE01" / "lgemri.nrrd")


def test_find_files_follows_links_without_looping(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.txt").write_text("1")
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "to_c").symlink_to(tmp_path / "c", target_is_directory=True)
    (tmp_path / "c" / "to_a").symlink_to(tmp_path / "a", target_is_directory=True)  # a cycle through two links
    (tmp_path / "c" / "x.txt").write_text("2")
    found = find_files(tmp_path, "x.txt")
    assert found == sorted([tmp_path / "a/b/x.txt", tmp_path / "a/to_c/x.txt", tmp_path / "c/x.txt",
                            tmp_path / "c/to_a/b/x.txt"])  # fmt: skip


def test_exclude_leaves_a_case_out_of_manifest_and_splits(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src", n=5)
    (root / "labelsTr" / "la_004.nii.gz").write_bytes(b"broken")  # would stop the import
    man = import_dataset(_data("msd", root, exclude=("la_004",)), tmp_path / "cache")
    assert sorted(c.case_id for c in man.cases) == ["la_003", "la_005", "la_006", "la_007"]
    plan = make_splits(man.patients(), SplitsConfig(n_splits=3, test_fraction=0.3, protocol="per_split"))
    for split in plan.splits:
        assert sorted(split.train_cases + split.test_cases) == ["la_003", "la_005", "la_006", "la_007"]
    with pytest.raises(DataError, match="la_004.nii.gz"):
        import_dataset(_data("msd", root), tmp_path / "cache")


def test_exclude_with_an_unknown_id_names_the_key_and_the_id(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    with pytest.raises(ConfigError) as err:
        import_dataset(_data("msd", root, exclude=("la_003", "la_999")), tmp_path / "cache")
    assert str(err.value).startswith("data.exclude: no case 'la_999' in ") and len(str(err.value).splitlines()) == 1
    assert "la_003" not in str(err.value)
    with pytest.raises(ConfigError, match="data.exclude: no case 'ph9999'"):
        import_dataset(DataConfig(exclude=("ph9999",)), tmp_path / "cache")
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(p.name.startswith("msd_") for p in cache.iterdir())


def test_duplicate_scan_names_exclude_as_the_way_out(fx, tmp_path):
    root = fx.make_layout("lascarqs", tmp_path / "src")
    shutil.copytree(root / "train_data/p1", root / "train_data/p9")
    with pytest.raises(DataError, match=r"p9/enhanced.nii.gz: duplicate scan: .*; leave one out with "
                       r"data.exclude=\[p9\]$"):  # fmt: skip
        _quiet_import(_data("lascarqs", root), tmp_path / "cache")
    man = _quiet_import(_data("lascarqs", root, exclude=("p9",)), tmp_path / "cache")
    assert sorted(c.case_id for c in man.cases) == ["p1", "p2", "p3"]


def test_phantom_exclude(tmp_path):
    from benchmark.config import PhantomConfig

    data = DataConfig(phantom=PhantomConfig(n_patients=2, scans_per_patient=(2, 2), shape=(24, 24, 12)))
    man = import_dataset(DataConfig(**{**data.__dict__, "exclude": ("ph0001_s2",)}), tmp_path)
    assert man.patients() == {"ph0000": ["ph0000_s1", "ph0000_s2"], "ph0001": ["ph0001_s1"]}
    assert man.root == import_dataset(data, tmp_path).root  # the generated phantom itself is shared


def test_cache_key_changes_with_patient_settings_and_not_for_defaults(fx, tmp_path):
    root = fx.make_layout("la2018", tmp_path / "src")
    layout = ADAPTERS["la2018"]
    sources = layout.discover(root)

    def key(**kw):
        return _cache_key(layout, _data("la2018", root, **kw), root, sources)

    # the key before these settings existed: unchanged, so the default study reuses its converted dataset
    old = {k: v for k, v in to_dict(_data("la2018", root)).items()
           if k not in ("phantom", "cache_dir", "patients", "patients_dice", "exclude")}  # fmt: skip
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
             for p in [root / "patients.csv", root / "dataset.json"] + [q for s in sources
                                                                         for q in (s.image, s.label, s.wall)]
             if p.is_file()]  # fmt: skip
    assert key() == config_hash({"version": ADAPTER_VERSION, "layout": "la2018", "settings": old, "files": stamp})
    keys = {key(), key(patients="infer"), key(patients="infer", patients_dice=0.8), key(exclude=("CASE01",))}
    assert len(keys) == 4
    assert key(patients_dice=0.8) == key()  # the threshold only matters when patients are inferred
    assert key(exclude=("CASE01", "CASE00")) == key(exclude=("CASE00", "CASE01", "CASE00"))


def test_cache_follows_exclude_changes(fx, tmp_path):
    root = fx.make_layout("nnunet", tmp_path / "src", n=4)
    every = import_dataset(_data("nnunet", root), tmp_path / "cache")
    fewer = import_dataset(_data("nnunet", root, exclude=("case002",)), tmp_path / "cache")
    assert fewer.root != every.root and len(fewer.cases) == 3 and len(every.cases) == 4
    assert import_dataset(_data("nnunet", root), tmp_path / "cache").root == every.root
    assert np.isin([c.case_id for c in fewer.cases], ["case002"]).sum() == 0
    assert os.path.isdir(every.root) and os.path.isdir(fewer.root)
