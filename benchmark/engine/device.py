"""The training device from the study's ``device`` key, checked on the node the job landed on.

``device: cuda`` on a node whose GPU cannot be used (a CPU-only torch build, no GPU visible, a GPU this torch
build has no kernels for, a driver that refuses it) raises a one-line ``ConfigError`` naming the node and the CUDA
state, instead of letting training run on the CPU. ``device: auto`` takes the GPU when one is visible and the CPU
when none is; a GPU that is visible but unusable is an error there too.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import torch

from benchmark.errors import ConfigError

log = logging.getLogger(__name__)

CHOICES = ("auto", "cpu", "cuda")
_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([a-z]?)$")  # sm_86 -> (8, 6), compute_120 -> (12, 0), sm_90a


def cuda_state() -> str:
    """The CUDA state of this process in one line (for error messages and logs).

    Returns:
        e.g. ``torch 2.13.0+cpu, torch.version.cuda=None, torch.cuda.is_available()=False, device_count=0,
        CUDA_VISIBLE_DEVICES='0,1'``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch {torch.__version__}, torch.version.cuda={torch.version.cuda}, "
        f"torch.cuda.is_available()={torch.cuda.is_available()}, device_count={torch.cuda.device_count()}, "
        f"CUDA_VISIBLE_DEVICES={'<unset>' if visible is None else repr(visible)}"
    )


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for ``arch_list`` can run kernels on a GPU of ``capability``.

    A cubin (``sm_XY``) runs on its own major version at the same or a higher minor version; PTX (``compute_XY``)
    is compiled by the driver for any GPU at least that new; arch-specific code (``sm_90a``) runs on that GPU only.

    Args:
        capability: ``torch.cuda.get_device_capability()``, e.g. ``(7, 0)`` for a V100.
        arch_list: ``torch.cuda.get_arch_list()``, e.g. ``["sm_75", "sm_80", "sm_90", "compute_90"]``.

    Returns:
        True when some entry covers the GPU.
    """
    for entry in arch_list:
        m = _ARCH.match(entry)
        if m is None:
            continue
        kind, arch = m.group(1), (int(m.group(2)), int(m.group(3)))
        if m.group(4):
            if arch == tuple(capability):
                return True
            continue
        if kind == "sm" and arch[0] == capability[0] and arch[1] <= capability[1]:
            return True
        if kind == "compute" and arch <= capability:
            return True
    return False


def _cuda_problem(index: int) -> str | None:
    """Why ``cuda:<index>`` cannot be used, or None when a small computation on it works."""
    if torch.version.cuda is None:
        return "this torch build has no CUDA"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "no GPU is visible to this process"
    major, minor = torch.cuda.get_device_capability(index)
    arch_list = torch.cuda.get_arch_list()
    if not arch_supported((major, minor), arch_list):
        name = torch.cuda.get_device_name(index)
        return f"{name} (sm_{major}{minor}) is not among this build's architectures {' '.join(arch_list)}"
    try:
        (torch.ones(1, device=torch.device("cuda", index)) + 1).item()
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"a first computation on cuda:{index} failed ({first[:200]})"
    return None


def resolve_device(requested: str, local_rank: int | None = None) -> torch.device:
    """The device to train on for the study's ``device`` key, or a one-line error naming the node and CUDA state.

    Args:
        requested: ``"cpu"``, ``"cuda"`` or ``"auto"`` (``StudyConfig.device``).
        local_rank: this process's rank on its node, which picks ``cuda:<local_rank % device_count>``;
            None reads it from the launcher's environment (``distributed.detect_env``).

    Returns:
        ``cpu``, or ``cuda:<index>`` after a small computation on it succeeded. ``auto`` gives the CPU only when
        no GPU is visible (logged with the CUDA state). Raises ``ConfigError`` when ``cuda`` is requested and not
        usable, when ``auto`` finds a GPU it cannot use, or for any other value.
    """
    if requested not in CHOICES:
        raise ConfigError(f"device: {requested!r} is not one of {', '.join(CHOICES)}")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto" and (not torch.cuda.is_available() or torch.cuda.device_count() == 0):
        log.info("device auto: no GPU visible on %s (%s); training on the CPU", socket.gethostname(), cuda_state())
        return torch.device("cpu")
    if local_rank is None:
        from benchmark.engine.distributed import detect_env

        local_rank = detect_env().local_rank
    count = torch.cuda.device_count()
    index = local_rank % count if count > 0 else 0
    problem = _cuda_problem(index)
    if problem is not None:
        raise ConfigError(
            f"device: {requested} asks for a GPU, but node {socket.gethostname()} cannot use one: {problem} "
            f"({cuda_state()}, local rank {local_rank})"
        )
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the training device cannot run, with a one-line ``ConfigError``.

    bf16 needs native support (Ampere, sm_80, and newer): a V100 (sm_70) only emulates it, slowly, and
    ``torch.cuda.is_bf16_supported()`` would say yes by counting that emulation; fp16 (autocast with a grad scaler
    per network) is what such a GPU runs.

    Args:
        precision: ``train.precision`` (``fp32``, ``bf16`` or ``fp16``).
        device: the device ``fit`` trains on.
    """
    if precision != "bf16" or device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index):  # the check reads the current device
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return
    major, minor = torch.cuda.get_device_capability(index)
    raise ConfigError(
        f"train.precision: bf16 is not supported by {torch.cuda.get_device_name(index)} (sm_{major}{minor}) on "
        f"{socket.gethostname()} (torch.cuda.is_bf16_supported(including_emulation=False) is False); "
        "use train.precision=fp16 (autocast with a grad scaler per network) or fp32"
    )
