"""Patient-wise repeated splits: reproducible, leak-free, written once."""

from __future__ import annotations

import json

import pytest

from benchmark.config import SplitsConfig
from benchmark.data.splits import load_splits, make_splits, save_splits
from benchmark.errors import ConfigError, DataError

PATIENTS = {f"p{i:02d}": [f"p{i:02d}_s0"] + ([f"p{i:02d}_s1"] if i % 2 else []) for i in range(20)}


@pytest.mark.parametrize("protocol", ["per_split", "disjoint_pool", "shared"])
def test_splits_are_patient_wise_and_reproducible(protocol):
    cfg = SplitsConfig(n_splits=5, test_fraction=0.3, seed=1, protocol=protocol)
    a, b = make_splits(PATIENTS, cfg), make_splits(PATIENTS, cfg)
    assert a == b
    assert len({s.test_patients for s in a.splits}) > 1  # repeated splits differ
    owner = {c: p for p, cs in PATIENTS.items() for c in cs}
    for s in a.splits:
        assert not set(s.train_patients) & set(s.test_patients)
        assert {owner[c] for c in s.train_cases}.isdisjoint({owner[c] for c in s.test_cases})
        # every scan of a patient goes with its patient
        assert sorted(s.train_cases + s.test_cases) == sorted(
            c for p in s.train_patients + s.test_patients for c in PATIENTS[p]
        )
    if protocol == "disjoint_pool":
        assert len(a.pool_patients) == 6
        for s in a.splits:
            assert set(a.pool_patients).isdisjoint(s.test_patients + s.train_patients)
        assert a.generator_train_cases(0) == a.pool_cases
    assert a.leaky == (protocol == "shared")
    assert make_splits(PATIENTS, SplitsConfig(n_splits=5, seed=2, protocol=protocol)) != a


def test_save_once_and_reload(tmp_path):
    plan = make_splits(PATIENTS, SplitsConfig(n_splits=3))
    path = save_splits(plan, tmp_path / "splits.json")
    mtime = path.stat().st_mtime_ns
    assert load_splits(path, PATIENTS) == plan
    save_splits(plan, path)  # same content: untouched
    assert path.stat().st_mtime_ns == mtime
    other = make_splits(PATIENTS, SplitsConfig(n_splits=3, seed=9))
    with pytest.raises(DataError, match="refusing to overwrite"):
        save_splits(other, path)
    assert load_splits(path) == plan


def test_user_split_with_shared_patient_is_refused(tmp_path):
    plan = make_splits(PATIENTS, SplitsConfig(n_splits=1, protocol="per_split"))
    d = json.loads(json.dumps(__import__("dataclasses").asdict(plan)))
    s = d["splits"][0]
    moved = s["test_patients"][0]
    s["train_patients"].append(moved)
    path = tmp_path / "user_splits.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataError, match=rf"user_splits.json.*{moved}"):
        load_splits(path, PATIENTS)
    # a scan of a test patient hidden in the train cases is caught through the patient map
    s["train_patients"].remove(moved)
    s["train_cases"].append(PATIENTS[moved][0])
    path.write_text(json.dumps(d))
    with pytest.raises(DataError, match="user_splits.json"):
        load_splits(path, PATIENTS)


def test_bad_split_settings():
    with pytest.raises(ConfigError, match="n_splits"):
        make_splits(PATIENTS, SplitsConfig(n_splits=0))
    with pytest.raises(ConfigError, match="test_fraction"):
        make_splits(PATIENTS, SplitsConfig(test_fraction=1.0))


def test_generator_holdout_is_the_papers_single_split(tmp_path):
    scans = {f"s{i:03d}": [f"s{i:03d}"] for i in range(154)}  # the paper: 154 scans, each its own patient
    cfg = SplitsConfig(n_splits=1, test_fraction=0.195, protocol="shared", generator_holdout=10)
    plan = make_splits(scans, cfg)
    (split,) = plan.splits
    assert (len(split.train_cases), len(split.test_cases)) == (124, 30)
    assert len(plan.generator_holdout_cases) == 10
    assert len(plan.generator_train_cases(0)) == 144  # 10 held out, test scans included (leaky)
    assert set(plan.generator_train_cases(None)).isdisjoint(plan.generator_holdout_cases)
    assert plan.leaky
    # the hold-out is drawn after the splits: the split is the one drawn without it
    assert make_splits(scans, SplitsConfig(n_splits=1, test_fraction=0.195, protocol="shared")).splits == plan.splits
    assert load_splits(save_splits(plan, tmp_path / "a.json")) == plan
    no_holdout = make_splits(PATIENTS, SplitsConfig(n_splits=1))
    assert "generator_holdout_cases" not in json.loads(save_splits(no_holdout, tmp_path / "b.json").read_text())


def test_generator_holdout_needs_the_shared_protocol_and_whole_patients():
    with pytest.raises(ConfigError, match=r"splits.generator_holdout: 3 needs >= 0 and protocol shared"):
        SplitsConfig(protocol="per_split", generator_holdout=3)
    plan = make_splits(PATIENTS, SplitsConfig(n_splits=1, protocol="shared", generator_holdout=3))
    owner = {c: p for p, cs in PATIENTS.items() for c in cs}
    held = {owner[c] for c in plan.generator_holdout_cases}
    assert len(plan.generator_holdout_cases) >= 3
    assert sorted(plan.generator_holdout_cases) == sorted(c for p in held for c in PATIENTS[p])
    with pytest.raises(ConfigError, match="generator_holdout: 40 leaves no scan"):
        make_splits(PATIENTS, SplitsConfig(n_splits=1, protocol="shared", generator_holdout=40))


def test_repeated_splits_are_distinct_and_a_repeat_in_a_file_is_refused(tmp_path):
    # 7 patients, 5 in each test set: 21 possible test sets. Drawn independently, 10 splits repeat one with
    # seed 0 (the controls study's shape); a repeated split would count one experiment twice in the t-test
    seven = {f"p{i}": [f"p{i}_s0"] for i in range(7)}
    plan = make_splits(seven, SplitsConfig(n_splits=10, test_fraction=0.714, seed=0, protocol="per_split"))
    assert len({s.test_patients for s in plan.splits}) == 10
    assert all(len(s.test_patients) == 5 for s in plan.splits)
    with pytest.raises(ConfigError, match=r"splits\.n_splits: 22 splits asked for, but 7 patients give only 21"):
        make_splits(seven, SplitsConfig(n_splits=22, test_fraction=0.714, protocol="per_split"))
    path = save_splits(plan, tmp_path / "splits.json")
    raw = json.loads(path.read_text())
    raw["splits"][3] = {**raw["splits"][1], "index": 3}
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"split 3: the same test patients as split 1"):
        load_splits(path)
