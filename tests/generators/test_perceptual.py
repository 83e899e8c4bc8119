"""The MedicalNet perceptual loss: verified local weights only, off without a path, never random weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from benchmark.data.manifest import sha256_file
from benchmark.errors import CheckpointError, ConfigError
from benchmark.generators.perceptual import PerceptualConfig, build_perceptual, medicalnet_backbone
from benchmark.generators.spade_gan import SpadeGanConfig
from benchmark.generators.spade_gan import build as build_gan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory) -> tuple[str, str, dict]:
    """A MedicalNet-layout resnet50 state dict (random weights, ``module.`` prefixed like the real files)."""
    torch.manual_seed(0)
    state = medicalnet_backbone("resnet50").state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet_50_23dataset.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return str(path), sha256_file(path), state


def _volumes(seed: int) -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_loads_verified_weights_and_measures_distance(fake_weights):
    path, digest, state = fake_weights
    loss = build_perceptual(PerceptualConfig(weights_path=path, weights_sha256=digest))
    assert loss is not None
    assert torch.equal(loss.backbone.conv1.weight, state["conv1.weight"])  # the file's weights, not a fresh init
    x, y = _volumes(1).requires_grad_(True), _volumes(2)
    value = loss(x, y)
    assert value.item() > 0
    assert loss(y, y.clone()).item() == 0.0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.backbone.parameters())  # frozen backbone
    loss.train()
    assert not loss.backbone.training  # BatchNorm statistics of the pretrained net never update


def test_wrong_hash_names_the_file(fake_weights):
    path, digest, _ = fake_weights
    bad = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    with pytest.raises(CheckpointError, match="resnet_50_23dataset.pth") as info:
        build_perceptual(PerceptualConfig(weights_path=path, weights_sha256=bad))
    assert "sha256" in str(info.value)


def test_missing_hash_or_file_is_a_config_error(fake_weights, tmp_path):
    path, _, _ = fake_weights
    with pytest.raises(ConfigError, match="sha256"):
        build_perceptual(PerceptualConfig(weights_path=path), key="generators.spade_gan.perceptual")
    with pytest.raises(ConfigError, match="generators.spade_gan.perceptual.weights_path"):
        build_perceptual(
            PerceptualConfig(weights_path=str(tmp_path / "nope.pth"), weights_sha256="0" * 64),
            key="generators.spade_gan.perceptual",
        )


def test_weights_of_another_backbone_are_refused(fake_weights):
    path, digest, _ = fake_weights
    with pytest.raises(CheckpointError, match="does not match MedicalNet resnet34"):
        build_perceptual(PerceptualConfig(weights_path=path, weights_sha256=digest, backbone="resnet34"))


def test_no_path_means_off_and_is_recorded():
    assert build_perceptual(PerceptualConfig()) is None
    model = build_gan(SpadeGanConfig.tiny(), 4, (16, 16, 16))
    assert model.perceptual is None
    assert model.tags() == {"perceptual": "off"}


def test_generator_uses_the_loss_when_weights_are_given(fake_weights):
    path, digest, _ = fake_weights
    cfg = replace(SpadeGanConfig.tiny(), perceptual=PerceptualConfig(weights_path=path, weights_sha256=digest))
    model = build_gan(cfg, 4, (16, 16, 16))
    assert model.tags() == {"perceptual": "on"}
    image = _volumes(3)
    label = torch.randint(0, 4, (2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    seg = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    noise = torch.zeros(2, cfg.z_dim)
    fake, mu, logvar = model.networks["generator"](seg, image, noise)
    losses = model._generator_losses(model.networks["discriminator"], image, seg, fake, mu, logvar)
    assert losses["g_perceptual"].item() > 0


def test_bad_layer_name_is_a_config_error():
    with pytest.raises(ConfigError, match="layers"):
        PerceptualConfig(layers=("layer9",))
