"""The oracle arm (extra real scans from outside the split) and the negative control (mismatched labels)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_case

from benchmark.config import load_config
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.arms import ArmItem, LeakageError, audit_arm, build_arm, load_synth_index, parse_arm
from benchmark.segmentation.controls import check_protocol, control_rng, derange_cases, draw_extra, outside_cases

TRAIN = ("p0_s1", "p0_s2", "p1_s1", "p1_s2", "p2_s1", "p2_s2")
TEST = ("p3_s1", "p3_s2")
POOL = ("p4_s1", "p4_s2", "p5_s1", "p6_s1")


@pytest.fixture
def study_cases(cases):
    """The conftest's eight cases plus four scans of three pool patients (p4..p6), outside the split."""
    return {**cases, **{c: toy_case(20 + k) for k, c in enumerate(POOL)}}


@pytest.fixture
def patients(study_cases):
    return {c: c.split("_")[0] for c in study_cases}


def _oracle(study_cases, patients, ratio=0.5, seed=0, split=0, extra=POOL):
    return build_arm(
        "real+real_extra", TRAIN, TEST, study_cases, {}, ratio, seed, split=split, extra_ids=extra, patients=patients
    )


def test_outside_cases_are_the_pool(split, patients):
    assert outside_cases(split, patients) == POOL


def test_oracle_adds_the_asked_number_of_outside_scans(study_cases, patients, split):
    arm = _oracle(study_cases, patients, ratio=0.5)
    assert (arm.n_real, arm.n_real_extra, arm.n_synthetic, arm.n_augmented) == (9, 3, 0, 0)
    extra = [i for i in arm.items if i.origin == "real_extra"]
    assert len({i.source_case_id for i in extra}) == 3 and {i.source_case_id for i in extra} <= set(POOL)
    for item in extra:  # the extra scan's own image and expert cavity
        np.testing.assert_array_equal(item.image, study_cases[item.source_case_id][0])
        np.testing.assert_array_equal(item.target, (study_cases[item.source_case_id][1] == 1).astype(np.uint8))
    summary = arm.summary()
    assert summary["n_real_extra"] == 3 and summary["extra_fill"] == "distinct" and summary["extra_pool_size"] == 4
    assert sum(summary["extra_draws"].values()) == 3 and summary["sources"]["real_extra"] == sorted(
        summary["extra_draws"]
    )
    report = audit_arm(arm, split, patients)
    assert not report.leaky and report.message.endswith("clean")
    assert not {patients[c] for c in summary["sources"]["real_extra"]} & {"p0", "p1", "p2", "p3"}


def test_a_small_pool_is_cycled_and_recorded(study_cases, patients, split):
    arm = _oracle(study_cases, patients, ratio=1.5, extra=("p4_s1", "p5_s1"))  # 9 extra from 2 scans
    assert arm.n_real_extra == 9
    summary = arm.summary()
    assert summary["extra_fill"] == "repeated" and summary["extra_unique"] == 2
    assert sorted(summary["extra_draws"].values()) == [4, 5]  # balanced repeats, never 8 + 1
    audit_arm(arm, split, patients)


def test_oracle_draw_is_seeded_per_split_and_seed(study_cases, patients):
    def drawn(seed, split):
        return [i.source_case_id for i in _oracle(study_cases, patients, seed=seed, split=split).items[6:]]

    assert drawn(0, 1) == drawn(0, 1)
    assert len({tuple(drawn(0, k)) for k in range(5)}) > 1
    assert len({tuple(drawn(s, 0)) for s in range(5)}) > 1
    ids, fill = draw_extra(POOL, 4, control_rng(0, 0, "real+real_extra"))
    assert sorted(ids) == list(POOL) and fill == "distinct"


def test_oracle_without_outside_patients_names_both_keys(study_cases, patients):
    with pytest.raises(ConfigError, match=r"^segmentation.arms: real\+real_extra .* splits.protocol 'per_split'"):
        build_arm("real+real_extra", TRAIN, TEST, study_cases, {}, protocol="per_split")
    with pytest.raises(ConfigError, match="splits.protocol 'shared' leaves none") as err:
        check_protocol(["real", "real+real_extra"], "shared")
    assert "\n" not in str(err.value)
    check_protocol(["real", "real+real_extra"], "disjoint_pool")
    check_protocol(["real", "real+augmented"], "per_split")


def test_sweep_refuses_the_oracle_without_a_pool():
    from benchmark.run.sweep import build_graph

    arms = "segmentation.arms=[real,real+real_extra,'real+mismatched:{generator}']"
    cfg = load_config(None, [arms, "splits.protocol=per_split"])
    with pytest.raises(ConfigError, match=r"segmentation.arms: real\+real_extra"):
        build_graph(cfg, ["pix2pix3d"], 2, lambda s: f"split{s}")
    cfg = load_config(None, [arms, "splits.protocol=disjoint_pool"])
    graph = {key: deps for key, _, _, deps in build_graph(cfg, ["pix2pix3d"], 2, lambda s: "pool")}
    assert graph["seg/split1/seed0/real+real_extra"] == ()
    assert graph["seg/split1/seed0/real+mismatched:pix2pix3d"] == ("gen/pool/pix2pix3d/seed0",)


@pytest.mark.parametrize(
    ("case", "why"),
    [("p3_s1", "derived from test case p3_s1"), ("p1_s2", "p1_s2 of patient p1 is in the split's train set")],
)
def test_audit_refuses_an_extra_scan_of_the_split(study_cases, patients, split, case, why):
    arm = _oracle(study_cases, patients)
    arm.items[-1] = ArmItem(study_cases[case][0], study_cases[case][1], "real_extra", case)
    with pytest.raises(LeakageError, match=why):
        audit_arm(arm, split, patients)


def test_audit_refuses_extra_scans_it_cannot_place_or_outside_the_oracle(study_cases, patients, split):
    arm = _oracle(study_cases, patients)
    with pytest.raises(LeakageError, match="has no known patient"):
        audit_arm(arm, split)
    # a pool scan whose patient also has a scan in the test set (mislabelled patient ids) is caught by patient
    with pytest.raises(LeakageError, match="of patient p3 is in the split's test set"):
        audit_arm(arm, split, {**patients, **dict.fromkeys(POOL, "p3")})
    real = build_arm("real", TRAIN, TEST, study_cases, {})
    real.items.append(ArmItem(study_cases["p4_s1"][0], study_cases["p4_s1"][1], "real_extra", "p4_s1"))
    with pytest.raises(LeakageError, match=r"only real\+real_extra adds them"):
        audit_arm(real, split, patients)
    real.items[-1] = ArmItem(study_cases["p4_s1"][0], study_cases["p4_s1"][1], "real", "p4_s1")
    with pytest.raises(LeakageError, match="derived from p4_s1, which is not a training case"):
        audit_arm(real, split, patients)


@pytest.fixture
def index(tmp_path, make_samples):
    folder = make_samples(tmp_path / "gen", TRAIN)
    return {"pix2pix3d": load_synth_index(folder, generator="pix2pix3d", split=0, seed=0)}


def _mismatched(index, study_cases, patients, seed=0, split=0):
    return build_arm(
        "real+mismatched:pix2pix3d", TRAIN, TEST, study_cases, index, 1.0, seed, split=split, patients=patients
    )


def test_negative_control_pairs_every_volume_with_another_patients_label(index, study_cases, patients, split):
    assert parse_arm("real+mismatched:pix2pix3d") == ("real+mismatched", "pix2pix3d")
    arm = _mismatched(index, study_cases, patients)
    assert (arm.n_real, arm.n_synthetic, arm.generator) == (6, 6, "pix2pix3d")
    synth = [i for i in arm.items if i.origin == "synthetic"]
    pairs = arm.summary()["label_pairs"]
    assert sorted(pairs) == sorted(pairs.values()) == sorted(TRAIN)  # a bijection over the training cases
    for item in synth:
        assert patients[item.label_case_id] != patients[item.source_case_id]
        expected = (study_cases[item.label_case_id][1] == 1).astype(np.uint8)
        np.testing.assert_array_equal(item.target, expected)
        assert not np.array_equal(item.target, (study_cases[item.source_case_id][1] == 1).astype(np.uint8))
    assert not audit_arm(arm, split, patients).leaky
    draws = {tuple(sorted(_mismatched(index, study_cases, patients, split=k).summary()["label_pairs"].items()))
             for k in range(4)}  # fmt: skip
    assert len(draws) > 1 and tuple(sorted(pairs.items())) in draws


def test_audit_refuses_a_label_of_a_test_case(index, study_cases, patients, split):
    arm = _mismatched(index, study_cases, patients)
    k = next(i for i, it in enumerate(arm.items) if it.origin == "synthetic")
    arm.items[k] = ArmItem(arm.items[k].image, arm.items[k].target, "synthetic", arm.items[k].source_case_id,
                           arm.items[k].path, label_case_id="p3_s2")  # fmt: skip
    with pytest.raises(LeakageError, match="synthetic training volume labelled by test case p3_s2"):
        audit_arm(arm, split, patients)


def test_derangement_is_impossible_when_one_patient_dominates():
    rng = np.random.default_rng(0)
    pairing = derange_cases(["a1", "a2", "b1", "c1"], {"a1": "a", "a2": "a", "b1": "b", "c1": "c"}, rng)
    assert all(pairing[c][0] != c[0] for c in pairing) and sorted(pairing.values()) == ["a1", "a2", "b1", "c1"]
    with pytest.raises(DataError, match="one patient holds more than half"):
        derange_cases(["a1", "a2", "b1"], {"a1": "a", "a2": "a", "b1": "b"}, rng)
    assert derange_cases(["x", "y"], None, rng) == {"x": "y", "y": "x"}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A prepared 8-patient phantom study under disjoint_pool: 2 pool patients, 2 splits of 4 training patients."""
    from study_fixtures import tiny_study_overrides

    from benchmark.study import prepare_study

    return prepare_study(load_config(None, tiny_study_overrides(tmp_path_factory.mktemp("controls"), n_splits=2)))


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_oracle_on_a_tiny_study_draws_only_outside_the_split(tiny_study, ratio):
    from benchmark.run.kinds.segmentation import assemble_arm

    plan, owner = tiny_study.plan, {c: a.patient_id for c, a in tiny_study.arrays.items()}
    assert plan.protocol == "disjoint_pool" and len(plan.pool_cases) == 2
    for s in plan.splits:
        data, audit = assemble_arm(tiny_study, {"split": s.index, "seed": 0, "arm": "real+real_extra", "ratio": ratio})
        extra = [i.source_case_id for i in data.items if i.origin == "real_extra"]
        assert len(extra) == data.n_real_extra == max(1, round(ratio * len(s.train_cases)))
        assert data.n_real == len(s.train_cases) + len(extra)
        assert set(extra) <= set(plan.pool_cases)
        assert not {owner[c] for c in extra} & (set(s.train_patients) | set(s.test_patients))
        assert data.summary()["extra_fill"] == ("repeated" if len(extra) > 2 else "distinct")
        assert not audit.leaky


def test_the_sweep_runs_the_generators_the_arms_name():
    from pathlib import Path

    from benchmark.run.sweep import parse_args, resolve_config
    from benchmark.segmentation.arms import named_generators

    configs = Path(__file__).resolve().parents[2] / "configs"
    _, gens = resolve_config(parse_args(["--config", str(configs / "controls.yaml")]))
    assert gens == ["labels2image"]
    _, gens = resolve_config(parse_args(["--config", str(configs / "controls.yaml"), "--generators", "spade_gan"]))
    assert gens == ["spade_gan"]
    _, gens = resolve_config(parse_args(["--config", str(configs / "default.yaml")]))
    assert gens == ["pix2pix3d", "spade_gan", "spade_ldm", "labels2image"]
    assert named_generators(["real", "real+augmented"]) is None
    assert named_generators(["real+spade_gan", "real+mismatched:spade_gan", "synthetic_only:pix2pix3d"]) == [
        "spade_gan", "pix2pix3d",
    ]  # fmt: skip
