"""Study settings shared by the sweep, Slurm and reliability tests (a unique module name, unlike conftest)."""

from __future__ import annotations

from pathlib import Path


def tiny_study_overrides(root: Path, name: str = "tiny", n_splits: int = 2) -> list[str]:
    """key=value overrides for a study that runs every stage in seconds (8 phantom patients, 2-step trainings)."""
    return [
        f"name={name}",
        f"output_dir={root}",
        f"data.cache_dir={root / 'cache'}",
        "data.phantom.n_patients=8",
        "data.phantom.scans_per_patient=[1,1]",
        "preprocess.shape=[32,32,16]",
        "preprocess.spacing=null",
        f"splits.n_splits={n_splits}",
        "splits.test_fraction=0.34",
        "splits.pool_fraction=0.25",
        "train.threads=1",
        "train.checkpoint_every=1",
        "generators.pix2pix3d.features=[4,4,8,8,16,4]",
        "generators.pix2pix3d.d_channels=4",
        "generators.pix2pix3d.d_layers=2",
        "generators.pix2pix3d.steps=2",
        "generators.spade_gan.channels=[4,8]",
        "generators.spade_gan.z_dim=8",
        "generators.spade_gan.spade_hidden=4",
        "generators.spade_gan.d_channels=4",
        "generators.spade_gan.d_layers=2",
        "generators.spade_gan.steps=2",
        "generators.spade_ldm.ae_channels=[4,8]",
        "generators.spade_ldm.latent_channels=2",
        "generators.spade_ldm.norm_groups=4",
        "generators.spade_ldm.spade_hidden=4",
        "generators.spade_ldm.d_channels=4",
        "generators.spade_ldm.d_layers=2",
        "generators.spade_ldm.unet_channels=[8,8]",
        "generators.spade_ldm.unet_head_channels=4",
        "generators.spade_ldm.ae_steps=2",
        "generators.spade_ldm.diffusion_steps=2",
        "generators.spade_ldm.ddim_steps=2",
        "segmentation.channels=[4,8,16,32,64]",
        "segmentation.steps=3",
        "metrics.backbone=resnet10",
        "metrics.kid_subset_size=2",
        "metrics.kid_subsets=5",
        "metrics.fixed_n=0",
        "metrics.bootstrap=20",
        "robustness.enabled=false",  # the robustness tests turn it on (tests/robustness/)
    ]
