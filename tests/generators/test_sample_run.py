"""A generator logged by its run is rebuilt from the study folder's store and samples new label maps
(``launchers/sample.py``); bad input ends in one line and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data.io import load_volume, save_nifti
from benchmark.generators import get_generator_spec
from benchmark.generators.export import ARTIFACT_DIR, save_generator
from benchmark.generators.train import sample_to_disk
from benchmark.run.cli import main_guard
from benchmark.run.sample import main, with_sampler
from benchmark.tracking.tracker import MLflowTracker, default_uri, ensure_experiment

SHAPE, NUM_CLASSES, RUN = (32, 32, 16), 3, "gen/pool/spade_ldm/seed0"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder whose store holds a generator run with weights and a run without any."""
    root = tmp_path_factory.mktemp("study")
    spec = get_generator_spec("spade_ldm")
    torch.manual_seed(0)
    gen = spec.build(spec.config_cls.tiny(), NUM_CLASSES, SHAPE)
    gen.latent_scale = 0.5  # extra state the weights must carry
    uri = default_uri(root)
    exp = ensure_experiment(uri, "study", root / "mlartifacts")
    run = MLflowTracker(uri, exp, RUN, spool_dir=root / "spool")
    for path in save_generator(gen, "spade_ldm", NUM_CLASSES, SHAPE, root / "job" / ARTIFACT_DIR):
        run.log_artifact(path, ARTIFACT_DIR)
    run.end()
    bare = MLflowTracker(uri, exp, "seg/split0/seed0/real", spool_dir=root / "spool")
    bare.end()
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [4.0, -2.0, 7.0]
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[8:24, 8:24, 4:12] = 1
    label[12:20, 12:20, 6:10] = 2
    save_nifti(root / "labels" / "case_a.nii.gz", label, affine)
    return {"root": root, "gen": gen, "bare": bare.run_id, "label": label, "affine": affine}


def _sample(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main_guard(lambda: main(argv))
    return rc, capsys.readouterr().err


def test_a_logged_generator_is_reloaded_by_run_name_and_samples_with_the_label_affine(study, tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["--run", RUN, "--labels", str(study["root"] / "labels"), "--out", str(out), "--study", str(study["root"])]
    rc, err = _sample([*argv, "--sampler", "ddim", "--steps", "2"], capsys)
    assert rc == 0, err
    assert list((study["root"] / "mlartifacts").rglob("weights.pt"))  # a local store keeps its artifacts locally
    vol = load_volume(out / "samples" / "case_a.nii.gz")
    assert vol.array.shape == SHAPE and np.allclose(vol.affine, study["affine"])
    # the trained generator itself, sampled with the same noise, gives the same volume
    ref = with_sampler(study["gen"], "spade_ldm", "ddim", 2)
    sample_to_disk(ref, {"case_a": study["label"]}, {"case_a": study["affine"]}, tmp_path / "ref", 0)
    np.testing.assert_allclose(vol.array, load_volume(tmp_path / "ref" / "samples" / "case_a.nii.gz").array)


@pytest.mark.parametrize("bad", ["no_weights", "more_classes", "unknown_run", "wrong_shape", "unknown_sampler"])
def test_bad_input_is_one_line_and_writes_nothing(study, tmp_path, capsys, bad):
    labels, run, extra = study["root"] / "labels", RUN, []
    if bad in ("more_classes", "wrong_shape"):
        labels = tmp_path / "labels"
        label = study["label"].copy() if bad == "more_classes" else np.zeros((16, 16, 16), np.uint8)
        label[0, 0, 0] = NUM_CLASSES if bad == "more_classes" else 0
        save_nifti(labels / "case_b.nii.gz", label, np.eye(4))
    run = {"no_weights": study["bare"], "unknown_run": "0123456789abcdef0123456789abcdef"}.get(bad, run)
    extra = ["--sampler", "ddpm2"] if bad == "unknown_sampler" else []
    out = tmp_path / "synth"
    rc, err = _sample(["--run", run, "--labels", str(labels), "--out", str(out), "--study", str(study["root"]),
                       *extra], capsys)  # fmt: skip
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    expected = {"no_weights": "has no generator weights", "more_classes": "label values 3 are outside",
                "unknown_run": "no run with that id", "wrong_shape": "differs from the generator's training shape",
                "unknown_sampler": "--sampler ddpm2"}  # fmt: skip
    assert expected[bad] in err, err
    assert not out.exists()
