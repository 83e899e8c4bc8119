"""The study's ``device`` key checked on the node: a GPU that is asked for and not usable is a one-line error."""

from __future__ import annotations

import socket

import pytest
import torch

from benchmark.engine.device import arch_supported, resolve_device
from benchmark.errors import ConfigError

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a node without a GPU")


def test_cpu_is_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@needs_no_gpu
def test_cuda_without_gpu_names_node_and_cuda_state(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what Slurm sets for a GPU job, here on a node without one
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda", local_rank=1)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"device: cuda asks for a GPU, but node {socket.gethostname()} cannot use one: ")
    expected = (
        f"torch.version.cuda={torch.version.cuda}",
        "torch.cuda.is_available()=False",
        "device_count=0",
        "CUDA_VISIBLE_DEVICES='0,1'",
        "local rank 1",
    )
    assert all(part in message for part in expected), message
    reason = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible to this process"
    assert reason in message


@needs_no_gpu
def test_auto_without_gpu_is_cpu_and_unset_visible_devices_is_named(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=<unset>"):
        resolve_device("cuda")


def test_gpu_the_build_has_no_kernels_for(monkeypatch):
    """A V100 (sm_70) under a cu128 build: visible, but every kernel launch would fail."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "sm_120", "compute_120"])
    for requested in ("cuda", "auto"):  # auto sees a GPU: it must not fall back to the CPU silently either
        with pytest.raises(ConfigError, match=r"Tesla V100-SXM2-32GB \(sm_70\) is not among this build's arch"):
            resolve_device(requested, local_rank=3)


@pytest.mark.parametrize(
    ("capability", "arch_list", "ok"),
    [
        ((7, 0), ["sm_75", "sm_80", "sm_90", "compute_90"], False),  # cu128 wheels on a V100
        ((7, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80"], True),  # cu126 wheels
        ((8, 6), ["sm_80", "sm_90"], True),  # sm_80 cubins run on an sm_86 GPU
        ((8, 0), ["sm_86"], False),  # ...but not the other way round
        ((9, 0), ["sm_90a"], True),  # arch-specific code runs on its own GPU...
        ((10, 0), ["sm_90a"], False),  # ...only
        ((12, 0), ["sm_90", "compute_90"], True),  # PTX is compiled by the driver for newer GPUs
        ((8, 0), ["compute_90"], False),
    ],
)
def test_arch_supported(capability, arch_list, ok):
    assert arch_supported(capability, arch_list) is ok


def test_unknown_device_value():
    with pytest.raises(ConfigError, match="device: 'gpu' is not one of auto, cpu, cuda"):
        resolve_device("gpu")
