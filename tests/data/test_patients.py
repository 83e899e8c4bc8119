"""Patients of datasets that name none: the warning, inference from cavity masks, and its check on the phantom."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from benchmark.config import DataConfig, PhantomConfig, load_config
from benchmark.data.adapters import import_dataset
from benchmark.data.io import load_label
from benchmark.data.layouts import read_patients
from benchmark.data.manifest import MANIFEST_NAME, Manifest
from benchmark.data.patients import INFERRED_CSV, group, infer_patients, pair_agreement, same_patient_pairs
from benchmark.data.phantom import generate_phantom, phantom_dir
from benchmark.data.pipeline import prepare_dataset
from benchmark.errors import ConfigError, DataError

# the phantom the inference is checked on: small, with post-ablation scans moved by 2.5 voxels
SHIFTED = PhantomConfig(n_patients=10, scans_per_patient=(1, 2), shape=(40, 40, 20), post_shift_vox=2.5)
# pre/post pairs of a la2018-style fixture: case -> (mask seed, roll of the mask in voxels)
PAIRS = {"CASE00": (0, None), "CASE01": (0, (1, -1, 0)), "CASE02": (1, None), "CASE03": (2, None),
         "CASE04": (2, (-1, 1, 0)), "CASE05": (3, None)}  # fmt: skip


def _paired_la2018(fx, root: Path) -> Path:
    for i, (case, (seed, roll)) in enumerate(PAIRS.items()):
        mask = fx.blob(seed) if roll is None else np.roll(fx.blob(seed), roll, axis=(0, 1, 2))
        fx.write_nrrd(root / case / "lgemri.nrrd", fx.image_for(mask, 100 + i))
        fx.write_nrrd(root / case / "laendo.nrrd", (mask * 255).astype(np.uint8))
    return root


def _data(root: Path, **kw) -> DataConfig:
    return DataConfig(kind="la2018", root=str(root), expected_spacing=(1.25, 1.25, 2.5), **kw)


def test_inference_recovers_the_shifted_phantoms_patients(tmp_path):
    man = generate_phantom(SHIFTED, tmp_path)
    truth = {c.case_id: c.patient_id for c in man.cases}
    true_pairs = same_patient_pairs(truth)
    assert len(true_pairs) >= 4
    # the shift makes the check non-trivial: without centring no true pair reaches the threshold
    raw = []
    for pair in true_pairs:
        a, b = (load_label(man.path(man.by_id()[c], "label")).array == 1 for c in sorted(pair))
        raw.append(2.0 * (a & b).sum() / (a.sum() + b.sum()))
    assert max(raw) < DataConfig().patients_dice

    inference = infer_patients(man, DataConfig().patients_dice)
    precision, recall = pair_agreement(inference.patients, truth)
    print(f"shifted phantom {SHIFTED.shape}, {len(truth)} scans, {len(true_pairs)} true pairs: "
          f"precision {precision:.3f}, recall {recall:.3f}, raw Dice of true pairs <= {max(raw):.3f}")  # fmt: skip
    assert precision >= 0.95 and recall >= 0.95  # measured: 1.0 and 1.0 (seeds 0, 1, 2)
    for case, (other, dice) in inference.closest.items():
        if truth[case] in {truth[c] for c in truth if c != case}:  # a scan with a partner
            assert truth[other] == truth[case] and dice >= 0.93


def test_post_shift_moves_only_post_scans_and_default_phantom_is_unchanged(tmp_path):
    assert phantom_dir(PhantomConfig(), tmp_path).name == "phantom_v1_dbce9d516207ab24"  # the cache before the option
    plain = PhantomConfig(**{**SHIFTED.__dict__, "post_shift_vox": 0.0})
    a, b = generate_phantom(plain, tmp_path / "a"), generate_phantom(SHIFTED, tmp_path / "b")
    assert a.root.name != b.root.name
    before, after = a.by_id(), b.by_id()
    for case_id, case in before.items():
        if case_id.endswith("_s1"):
            assert after[case_id].sha256_image == case.sha256_image
            assert after[case_id].sha256_label == case.sha256_label
            continue
        pre = load_label(a.path(case, "label")).array == 1
        post = load_label(b.path(after[case_id], "label")).array == 1
        moved = np.asarray(ndimage.center_of_mass(post)) - np.asarray(ndimage.center_of_mass(pre))
        assert np.linalg.norm(moved) == pytest.approx(2.5, abs=0.35)
        assert abs(int(post.sum()) - int(pre.sum())) < 0.08 * pre.sum()  # moved, not reshaped


def test_group_is_transitive_and_names_patients_by_smallest_case():
    ids = ["d", "a", "c", "b", "e"]
    assert group(ids, [("d", "c"), ("c", "b")]) == {"a": "a", "b": "b", "c": "b", "d": "b", "e": "e"}
    assert pair_agreement({"a": "a", "b": "a", "c": "c"}, {"a": "x", "b": "x", "c": "x"}) == (1.0, 1 / 3)


def test_la2018_without_patients_warns_and_records_a_note(fx, tmp_path):
    root = _paired_la2018(fx, tmp_path / "src")
    with pytest.warns(UserWarning) as record:
        man = import_dataset(_data(root), tmp_path / "cache")
    lines = [str(w.message) for w in record if "patients.csv" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{root}: no patients.csv") and "data.patients=infer" in lines[0]
    assert str(root / "patients.csv") in lines[0]
    assert man.patient_source == "per_scan" and len(man.notes) == 1 and "la2018" in man.notes[0]
    assert json.loads((man.root / MANIFEST_NAME).read_text())["notes"] == list(man.notes)
    with pytest.warns(UserWarning, match="no patients.csv"):  # again when the cache is reused
        again = import_dataset(_data(root), tmp_path / "cache")
    assert again.root == man.root and again.notes == man.notes
    (root / "patients.csv").write_text("case_id,patient_id\n" + "".join(f"{c},P{c}\n" for c in PAIRS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = import_dataset(_data(root), tmp_path / "cache")
    assert named.patient_source == "patients.csv" and named.notes == ()


def test_msd_without_patients_is_not_warned_about(fx, tmp_path):
    root = fx.make_layout("msd", tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        man = import_dataset(DataConfig(kind="msd", root=str(root), expected_spacing=fx.SPACING), tmp_path / "c")
    assert man.patient_source == "per_scan" and man.notes == ()


def test_infer_groups_pre_post_pairs_and_writes_an_editable_csv(fx, tmp_path):
    root = _paired_la2018(fx, tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inferring is the way out: no warning
        man = import_dataset(_data(root, patients="infer"), tmp_path / "cache")
    assert man.patients() == {"CASE00": ["CASE00", "CASE01"], "CASE02": ["CASE02"],
                              "CASE03": ["CASE03", "CASE04"], "CASE05": ["CASE05"]}  # fmt: skip
    assert man.patient_source == "inferred" and "6 scans -> 4 patients" in man.notes[0]
    written = man.root / INFERRED_CSV
    assert str(written) in man.notes[0]
    assert json.loads((man.root / MANIFEST_NAME).read_text())["notes"] == list(man.notes)  # the final path
    rows = written.read_text().splitlines()
    assert rows[0] == "case_id,patient_id,closest_case,closest_dice"
    assert rows[1].startswith("CASE00,CASE00,CASE01,1.0000")  # a rolled mask is the same mask once centred
    (tmp_path / "edit").mkdir()
    (tmp_path / "edit" / "patients.csv").write_text(written.read_text())  # usable as a patients.csv as it is
    assert read_patients(tmp_path / "edit", sorted(PAIRS)) == {c.case_id: c.patient_id for c in man.cases}
    strict = import_dataset(_data(root, patients="infer", patients_dice=0.999999), tmp_path / "cache")
    assert strict.root != man.root and len(strict.patients()) == 4  # identical once centred: still paired

    (root / "patients.csv").write_text(written.read_text())
    with pytest.raises(DataError, match=r"patients.csv: present but data.patients=infer") as err:
        import_dataset(_data(root, patients="infer"), tmp_path / "cache")
    assert len(str(err.value).splitlines()) == 1


def test_phantom_infer_and_prepared_study_carry_the_patient_source(tmp_path):
    over = [f"data.cache_dir={tmp_path}", "data.phantom.n_patients=10", "data.phantom.shape=[40,40,20]",
            "data.phantom.post_shift_vox=2.5", "preprocess.shape=[24,24,12]"]  # fmt: skip
    known = prepare_dataset(load_config(None, over))
    inferred = prepare_dataset(load_config(None, [*over, "data.patients=infer"]))
    assert known.patient_source == "phantom" and inferred.patient_source == "inferred"
    assert inferred.notes and "scans -> " in inferred.notes[0]
    truth = {c.case_id: c.patient_id for c in known.cases}
    assert pair_agreement({c.case_id: c.patient_id for c in inferred.cases}, truth) == (1.0, 1.0)
    assert inferred.digest() != known.digest()  # other patient ids: another preprocessed cache
    assert (phantom_dir(load_config(None, over).data.phantom, tmp_path) / INFERRED_CSV).is_file()


def test_manifest_keeps_notes_and_omits_them_when_empty(tmp_path):
    man = Manifest(root=tmp_path, dataset="x", cases=(), patient_source="per_scan", notes=("a caveat",))
    man.save()
    loaded = Manifest.load(tmp_path)
    assert (loaded.patient_source, loaded.notes) == ("per_scan", ("a caveat",))
    Manifest(root=tmp_path, dataset="x", cases=()).save()
    assert set(json.loads((tmp_path / MANIFEST_NAME).read_text())) == {"dataset", "digest", "cases"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.patients_dice=1.5", "data.patients_dice: 1.5 must be between 0 and 1"),
        ("data.patients=guess", "data.patients: 'guess' is not one of the allowed choices"),
        ("data.phantom.post_shift_vox=-1", "data.phantom.post_shift_vox: -1.0 must be in 0..8"),
        ("data.exclude=CASE01", "data.exclude: expected a list"),
    ],
)
def test_bad_patient_settings_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message.split(":")[0]) and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1
