"""The training-data fraction axis without training: the nested, seeded choice of patients, the config's checks,
the default study's keys and hashes, and the job graph of a fraction study."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from study_fixtures import tiny_study_overrides

from benchmark.config import config_hash, load_config, to_dict
from benchmark.errors import ConfigError
from benchmark.run.job import job_hash
from benchmark.run.kinds.segmentation import arm_folder
from benchmark.run.sweep import build_graph
from benchmark.segmentation.fractions import fraction_cases, fraction_patients, n_patients, split_suffix, suffix

PATIENTS = tuple(f"p{i:02d}" for i in range(10))


def test_fractions_are_nested_seeded_per_split_and_seed_and_keep_at_least_one_patient():
    for split in range(3):
        for seed in range(3):
            chosen = {f: fraction_patients(PATIENTS, f, seed, split) for f in (0.05, 0.25, 0.5, 0.75, 1.0)}
            assert [len(chosen[f]) for f in sorted(chosen)] == [1, 3, 5, 8, 10]  # halves round up, at least 1
            assert chosen[0.25] == chosen[0.5][:3] and chosen[0.5] == chosen[0.75][:5]  # nested prefixes
            assert set(chosen[1.0]) == set(PATIENTS)
            assert fraction_patients(PATIENTS, 0.5, seed, split) == chosen[0.5]  # deterministic
    draws = {fraction_patients(PATIENTS, 0.5, seed, split) for split in range(3) for seed in range(3)}
    assert len(draws) > 5  # another split or seed draws other patients
    assert fraction_patients(list(reversed(PATIENTS)), 0.5, 1, 2) == fraction_patients(PATIENTS, 0.5, 1, 2)
    assert n_patients(0.01, 3) == 1 and n_patients(1.0, 3) == 3


def test_fraction_cases_take_every_scan_of_a_chosen_patient_and_none_of_the_others():
    cases = tuple(f"{p}_{k}" for p in PATIENTS[:6] for k in ("pre", "post"))
    split = SimpleNamespace(index=1, train_cases=cases, train_patients=PATIENTS[:6])
    patient_of = {c: c.split("_")[0] for c in cases}
    half = fraction_cases(split, 0.5, 0, patient_of)
    assert {patient_of[c] for c in half} == set(fraction_patients(PATIENTS[:6], 0.5, 0, 1))
    assert len(half) == 6 and list(half) == [c for c in cases if c in half]  # both scans, the split's order
    assert fraction_cases(split, 1.0, 0, patient_of) == cases


def test_names_carry_a_fraction_part_only_below_1():
    assert suffix(1.0) == "" and suffix(0.5) == "@f0.5"
    assert split_suffix("real+x@r2@f0.25") == ("real+x@r2", 0.25) and split_suffix("split0") == ("split0", 1.0)
    p = {"split": 0, "seed": 0, "arm": "real+x", "ratio": 2.0}
    assert arm_folder(p) == "real+x@r2" and arm_folder(p | {"fraction": 0.5}) == "real+x@r2@f0.5"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("[0,1]", "0.0 is outside"),
        ("[0.5,1.5]", "1.5 is outside"),
        ("[0.5,0.5,1]", "repeats"),
        ("[0.5]", "1.0"),
        ("[0.3333333333,1]", "more than 6 significant digits"),
    ],  # fmt: skip
)
def test_bad_fractions_are_a_one_line_error_naming_the_key(tmp_path, value, text):
    with pytest.raises(ConfigError) as err:
        load_config(None, [*tiny_study_overrides(tmp_path), f"segmentation.fractions={value}"])
    assert str(err.value).startswith("segmentation.fractions: ") and text in str(err.value)
    assert "\n" not in str(err.value)


def test_the_default_study_keeps_its_config_dict_job_keys_and_hashes(tmp_path):
    base = load_config(None, tiny_study_overrides(tmp_path))
    same = load_config(None, [*tiny_study_overrides(tmp_path), "segmentation.fractions=[1]"])
    assert "fractions" not in to_dict(base)["segmentation"] and config_hash(base) == config_hash(same)
    graph = build_graph(base, ["labels2image"], 2, lambda s: "pool")
    assert all("fraction" not in p for _, _, p, _ in graph)
    assert [k for k, *_ in graph] == [k for k, *_ in build_graph(same, ["labels2image"], 2, lambda s: "pool")]
    seg = [(k, p) for k, kind, p, _ in graph if kind == "segmentation"]
    assert seg[0] == ("seg/split0/seed0/real", {"split": 0, "seed": 0, "arm": "real", "ratio": 1.0})
    more = load_config(None, [*tiny_study_overrides(tmp_path), "segmentation.fractions=[0.5,1]"])
    assert to_dict(more)["segmentation"]["fractions"] == [0.5, 1.0]
    # adding fractions to a study leaves its full-data jobs done: same keys, same hashes
    assert job_hash(base, "segmentation", seg[0][1]) == job_hash(more, "segmentation", seg[0][1])
    assert job_hash(base, "segmentation", seg[0][1]) != job_hash(more, "segmentation", seg[0][1] | {"fraction": 0.5})


def test_per_split_generators_get_a_scope_per_fraction_and_the_pool_generator_is_shared(tmp_path):
    def graph(protocol):
        ov = [*tiny_study_overrides(tmp_path), f"splits.protocol={protocol}", "segmentation.fractions=[0.5,1]"]
        ov += ["segmentation.arms=[real,real+labels2image]"]
        scope = (lambda s: f"split{s}") if protocol == "per_split" else (lambda s: "pool")
        return {k: (kind, d) for k, kind, _, d in build_graph(load_config(None, ov), ["labels2image"], 1, scope)}

    per = graph("per_split")
    assert per["seg/split0/seed0/real+labels2image@f0.5"] == ("segmentation", ("gen/split0@f0.5/labels2image/seed0",))
    assert per["seg/split0/seed0/real+labels2image"] == ("segmentation", ("gen/split0/labels2image/seed0",))
    assert "seg/split0/seed0/real@f0.5" in per and "quality/split0/labels2image/seed0" in per
    pool = graph("disjoint_pool")
    assert pool["seg/split0/seed0/real+labels2image@f0.5"][1] == ("gen/pool/labels2image/seed0",)
    assert [k for k in pool if k.startswith("gen/")] == ["gen/pool/labels2image/seed0"]


def test_adding_fractions_keeps_every_existing_jobs_hash_also_with_the_consistency_loss(tmp_path):
    # spade_ldm with seg_weight > 0 depends on its scope's segmenter, whose params carry a hash of its settings
    ov = [*tiny_study_overrides(tmp_path), "splits.protocol=per_split", "generators.spade_ldm.seg_weight=1.0",
          "segmentation.arms=[real,real+spade_ldm]"]  # fmt: skip

    def hashes(extra):
        cfg = load_config(None, [*ov, *extra])
        graph = build_graph(cfg, ["spade_ldm"], 1, lambda s: f"split{s}")
        return {k: job_hash(cfg, kind, p) for k, kind, p, _ in graph}

    before, after = hashes([]), hashes(["segmentation.fractions=[0.5,1]", "train.loader_workers=0"])
    assert {k: after[k] for k in before} == before
    assert any(k.startswith("segmenter/split0@f0.5") for k in after) and len(after) > len(before)
