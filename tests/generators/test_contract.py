"""The contract every registered generator meets (a new registry line gets these tests for free)."""

from __future__ import annotations

import pytest
import torch
from generator_contract import check_declared_features, check_resume_is_bit_identical, check_two_steps_and_sample

from benchmark.errors import ConfigError
from benchmark.generators import GENERATORS, register
from benchmark.generators.base import GeneratorConfig, GeneratorSpec
from benchmark.generators.pix2pix3d import Pix2PixConfig
from benchmark.generators.spade_gan import SpadeGanConfig
from benchmark.generators.spade_ldm import SpadeLdmConfig


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_config_and_generator_declare_their_features(name):
    check_declared_features(GENERATORS[name])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_two_steps_finite_and_sample_shape(name, tmp_path):
    check_two_steps_and_sample(GENERATORS[name], tmp_path)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_resume_is_bit_identical(name, tmp_path):
    check_resume_is_bit_identical(GENERATORS[name], tmp_path)


def test_declared_warmups_and_samplers_of_the_three_generators():
    ldm = SpadeLdmConfig(adv_warmup=7, r1_warmup=9, ddim_steps=20, num_train_timesteps=400, sampler="ddpm")
    assert ldm.warmups() == {"adv_warmup": 7, "r1_warmup": 9}
    assert ldm.samplers() == {"ddim": 20, "ddpm": 400}
    assert ldm.default_sampler() == "ddpm"
    for single_pass in (Pix2PixConfig(), SpadeGanConfig()):
        assert single_pass.warmups() == {} and single_pass.samplers() == {}
        assert single_pass.default_sampler() is None


def test_epochs_is_declared_once_by_the_base():
    assert all(issubclass(spec.config_cls, GeneratorConfig) for spec in GENERATORS.values())
    assert SpadeLdmConfig(epochs=4).epochs == 4 and Pix2PixConfig().epochs is None


def test_registering_a_taken_name_raises():
    before = dict(GENERATORS)
    taken = GeneratorSpec("spade_gan", Pix2PixConfig, GENERATORS["pix2pix3d"].build)
    with pytest.raises(ConfigError, match=r"generator 'spade_gan' is already registered \(by .*spade_gan\.build\)"):
        register(taken)
    assert before == GENERATORS and GENERATORS["spade_gan"].config_cls is SpadeGanConfig


def test_registering_a_config_outside_the_contract_raises():
    class NoTiny(GeneratorConfig):
        pass

    with pytest.raises(ConfigError, match="'no_tiny': NoTiny defines no tiny"):
        register(GeneratorSpec("no_tiny", NoTiny, GENERATORS["pix2pix3d"].build))
    with pytest.raises(ConfigError, match="'plain': its config class must subclass GeneratorConfig"):
        register(GeneratorSpec("plain", dict, GENERATORS["pix2pix3d"].build))
    assert "no_tiny" not in GENERATORS and "plain" not in GENERATORS
    with pytest.raises(NotImplementedError, match="NoTiny must define tiny"):
        NoTiny.tiny()
