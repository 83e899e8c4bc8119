"""``configs/paper.yaml`` is the paper: every setting the paper states is pinned here so that it cannot drift, and
``configs/paper_single_split.yaml`` (the published single-split protocol) loads and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import load_config, to_dict
from benchmark.run.sweep import main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper.yaml"
SINGLE = REPO / "configs" / "paper_single_split.yaml"


@pytest.mark.parametrize("path", [PAPER, SINGLE], ids=lambda p: p.name)
def test_the_paper_settings(path):
    cfg = load_config(path)
    ldm, gan, seg = cfg.generators["spade_ldm"], cfg.generators["spade_gan"], cfg.segmentation
    assert cfg.composite.k == 2  # "For this study, we used k = 2"
    assert (ldm.lr_ae, ldm.lr_d) == (2e-4, 4e-4)  # the autoencoder's Adam: generator / discriminator
    assert ldm.precision == "fp16" and cfg.train.precision == "fp32"  # mixed precision for the autoencoder only
    assert ldm.epochs == gan.epochs == seg.epochs == 200  # 200 epochs for every network of the paper's list
    assert seg.augment.elastic > 0  # elastic deformation among the segmenter's augmentations
    assert gan.upsampling == "trilinear"
    assert (gan.lr_g, gan.lr_d, gan.gan_loss) == (2e-5, 4e-5, "hinge")
    assert (ldm.guidance, ldm.p_uncond, ldm.schedule) == (1.5, 0.1, "cosine")
    assert (ldm.latent_channels, len(ldm.ae_channels) - 1) == (8, 4)  # 8 latent channels, four downsamplings
    assert seg.lr == 1e-4 and seg.class_weighting == "inverse"
    # the consistency loss is on (its weight is not in the paper); the study gives the job its scope's segmenter
    assert ldm.seg_weight > 0 and ldm.needs_segmenter()
    assert seg.budget == "epochs"  # 200 epochs per arm: an arm with more volumes trains more steps
    assert ("real@matched" in seg.arms) == (path == PAPER)  # the compute-matched control: the corrected study's


def test_the_single_split_config_is_the_published_protocol_with_the_paper_networks():
    paper, single = load_config(PAPER), load_config(SINGLE)
    assert single.splits.n_splits == 1 and single.seeds == (0,)
    assert single.splits.protocol == "shared" and single.splits.generator_holdout == 10
    assert round(single.splits.test_fraction * 154) == 30  # 124 training / 30 test scans of 154
    assert to_dict(single.generators) == to_dict(paper.generators)
    same = {k: v for k, v in to_dict(single.segmentation).items() if k != "arms"}
    assert same == {k: v for k, v in to_dict(paper.segmentation).items() if k != "arms"}
    assert to_dict(single.train) == to_dict(paper.train)
    assert (single.composite, single.preprocess) == (paper.composite, paper.preprocess)


def test_the_single_split_study_plans_without_reading_data(tmp_path, capsys):
    data = tmp_path / "la2018"
    for i in range(4):  # empty files: the dry run lists the scans and reads none
        (data / f"case{i:02d}").mkdir(parents=True)
        for name in ("lgemri.nrrd", "laendo.nrrd"):
            (data / f"case{i:02d}" / name).write_bytes(b"")
    out = tmp_path / "runs"
    assert main(["--dry-run", "--config", str(SINGLE), f"output_dir={out}", f"data.root={data}"]) == 0
    text = capsys.readouterr().out
    assert "study paper_single_split: " in text and "generator=3" in text and "segmentation=4" in text
    for gen in ("pix2pix3d", "spade_gan", "spade_ldm"):  # one shared scope: generators trained once, on 'all'
        assert f"gen/all/{gen}/seed0" in text
        assert f"seg/split0/seed0/real+{gen}  <- gen/all/{gen}/seed0" in text
    assert "split1" not in text
    assert not out.exists()
