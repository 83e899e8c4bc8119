"""Arm assembly and the leakage audit."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.segmentation.arms import (
    LeakageError,
    audit_arm,
    build_arm,
    expand_arms,
    load_synth_index,
    parse_arm,
)

TRAIN = ("p0_s1", "p0_s2", "p1_s1", "p1_s2", "p2_s1", "p2_s2")
TEST = ("p3_s1", "p3_s2")


def _index(tmp_path, make_samples, sources, **kw):
    folder = make_samples(tmp_path / "gen", sources, **kw)
    return {"pix2pix3d": load_synth_index(folder, generator="pix2pix3d", split=0, seed=0)}


def test_real_plus_generator_uses_only_training_label_maps(tmp_path, cases, split, make_samples):
    # the generator folder also holds samples conditioned on test label maps: they must never be chosen
    index = _index(tmp_path, make_samples, TRAIN + TEST, train_ids=TRAIN)
    arm = build_arm("real+pix2pix3d", split.train_cases, split.test_cases, cases, index, ratio=1.0, seed=3)
    assert (arm.n_real, arm.n_synthetic, arm.n_augmented) == (6, 6, 0)
    synth = [i for i in arm.items if i.origin == "synthetic"]
    assert {i.source_case_id for i in synth} == set(TRAIN)
    for item in synth:
        # the target is the conditioning case's expert cavity, the image the synthetic volume
        np.testing.assert_array_equal(item.target, (cases[item.source_case_id][1] == 1).astype(np.uint8))
        assert not np.array_equal(item.image, cases[item.source_case_id][0])
    report = audit_arm(arm, split)
    assert not report.leaky and report.protocol == "per_split"
    assert arm.summary()["generator_train_ids"] == list(TRAIN)


def test_ratio_and_synthetic_only_counts(tmp_path, cases, split, make_samples):
    index = _index(tmp_path, make_samples, TRAIN)
    half = build_arm("real+pix2pix3d", TRAIN, TEST, cases, index, ratio=0.5, seed=0)
    assert (half.n_real, half.n_synthetic) == (6, 3)
    only = build_arm("synthetic_only:pix2pix3d", TRAIN, TEST, cases, index, ratio=1.0, seed=0)
    assert (only.n_real, only.n_synthetic) == (0, 6)
    audit_arm(only, split)
    with pytest.raises(DataError, match="the arm needs 12"):
        build_arm("real+pix2pix3d", TRAIN, TEST, cases, index, ratio=2.0, seed=0)


def test_augmented_control_is_size_matched_and_seeded(cases, split):
    a = build_arm("real+augmented", TRAIN, TEST, cases, {}, ratio=1.0, seed=7)
    b = build_arm("real+augmented", TRAIN, TEST, cases, {}, ratio=1.0, seed=7)
    assert (a.n_real, a.n_synthetic, a.n_augmented) == (6, 0, 6)
    aug = [i for i in a.items if i.origin == "augmented"]
    assert {i.source_case_id for i in aug} == set(TRAIN)
    for x, y in zip(aug, (i for i in b.items if i.origin == "augmented"), strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.target, y.target)
    # affine is always on in the control: no augmented volume is a copy of its source
    assert all(not np.array_equal(i.image, cases[i.source_case_id][0]) for i in aug)
    audit_arm(a, split)


def test_sample_from_test_case_fails_audit(tmp_path, cases, split, make_samples):
    index = _index(tmp_path, make_samples, TRAIN)
    arm = build_arm("real+pix2pix3d", TRAIN, TEST, cases, index, seed=0)
    victim = next(i for i, it in enumerate(arm.items) if it.origin == "synthetic")
    arm.items[victim] = type(arm.items[victim])(
        cases["p3_s1"][0], cases["p3_s1"][1], "synthetic", "p3_s1", "synth_p3_s1.nii.gz"
    )
    with pytest.raises(LeakageError, match="synthetic training volume derived from test case p3_s1"):
        audit_arm(arm, split)


def test_generator_trained_on_test_patient_fails_unless_shared(tmp_path, cases, split, make_samples):
    index = _index(tmp_path, make_samples, TRAIN, train_ids=TRAIN + ("p3_s2",), protocol="per_split")
    arm = build_arm("real+pix2pix3d", TRAIN, TEST, cases, index, seed=0)
    with pytest.raises(LeakageError, match=r"trained on test patients/cases \['p3_s2'\]"):
        audit_arm(arm, split)
    shared = _index(tmp_path / "s", make_samples, TRAIN, train_ids=TRAIN + TEST, protocol="shared")
    arm = build_arm("real+pix2pix3d", TRAIN, TEST, cases, shared, seed=0)
    report = audit_arm(arm, split)
    assert report.leaky and "leaky" in report.message


def test_test_patients_never_in_a_training_list(cases, split):
    arm = build_arm("real", TRAIN + ("p3_s1",), TEST, cases, {}, seed=0)
    with pytest.raises(LeakageError, match="test cases in its training list"):
        audit_arm(arm, split)
    arm = build_arm("real", TRAIN, ("p3_s1",), cases, {}, seed=0)
    with pytest.raises(LeakageError, match="not the split's test cases"):
        audit_arm(arm, split)
    for name in ("real", "real+augmented"):
        arm = build_arm(name, TRAIN, TEST, cases, {}, seed=0)
        assert not {i.source_case_id for i in arm.items} & set(TEST)
        assert not audit_arm(arm, split).leaky


def test_missing_samples_names_path_and_command(tmp_path):
    folder = tmp_path / "runs" / "spade_ldm" / "split_2"
    with pytest.raises(DataError) as err:
        load_synth_index(folder, generator="spade_ldm", split=2, seed=1)
    msg = str(err.value)
    assert str(folder / "samples.json") in msg
    assert "python launchers/train_generator.py --generator spade_ldm --split 2 --seed 1" in msg


def test_missing_listed_volume_and_missing_index(tmp_path, cases, make_samples):
    folder = make_samples(tmp_path / "gen", TRAIN)
    (folder / "synth_p1_s2.nii.gz").unlink()
    with pytest.raises(DataError, match=r"synth_p1_s2.nii.gz: synthetic volume listed in .* is missing; make them"):
        load_synth_index(folder, generator="pix2pix3d", split=0, seed=0)
    with pytest.raises(DataError, match="no synthetic volumes of spade_gan were given"):
        build_arm("real+spade_gan", TRAIN, TEST, cases, {}, seed=0)


def test_arm_names():
    assert parse_arm("real+spade_ldm") == ("real+generator", "spade_ldm")
    assert parse_arm("synthetic_only:pix2pix3d") == ("synthetic_only", "pix2pix3d")
    assert parse_arm("real+augmented") == ("real+augmented", None)
    with pytest.raises(Exception, match="is not an arm"):
        parse_arm("fake")
    arms = expand_arms(("real", "real+augmented", "real+{generator}"), ["pix2pix3d", "spade_ldm"])
    assert arms == ["real", "real+augmented", "real+pix2pix3d", "real+spade_ldm"]


def test_ratio_two_draws_both_samples_of_every_label_map(tmp_path, cases, split, make_samples):
    import json

    import nibabel as nib

    one = _index(tmp_path / "one", make_samples, TRAIN)
    folder = make_samples(tmp_path / "two", TRAIN)  # the same first samples, then a second one per label map
    payload = json.loads((folder / "samples.json").read_text())
    for case_id in TRAIN:
        image = (cases[case_id][0] - 0.02).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"copy1_{case_id}.nii.gz"))
        payload["samples"].append({"case_id": case_id, "path": f"copy1_{case_id}.nii.gz", "copy": 1})
    (folder / "samples.json").write_text(json.dumps(payload))
    two = {"pix2pix3d": load_synth_index(folder, generator="pix2pix3d", split=0, seed=0)}
    double = build_arm("real+pix2pix3d", TRAIN, TEST, cases, two, ratio=2.0, seed=0)
    synth = [i for i in double.items if i.origin == "synthetic"]
    assert (double.n_real, double.n_synthetic) == (6, 12)
    assert sorted(i.source_case_id for i in synth) == sorted(TRAIN * 2) and len({i.path for i in synth}) == 12
    audit_arm(double, split)
    # a ratio-1 arm draws from the first samples only: the same draw as from a folder that holds nothing else
    paths = [
        [i.path.rsplit("/", 1)[-1] for i in build_arm("real+pix2pix3d", TRAIN, TEST, cases, x, seed=4).items[6:]]
        for x in (one, two)
    ]
    assert paths[0] == paths[1]
