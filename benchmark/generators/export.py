"""A trained generator as two files that rebuild it anywhere: ``weights.pt`` (every network's weights and the
model's extra state, e.g. the latent scale of SPADE-LDM) and ``generator.yaml`` (registry name, settings, number
of classes and training shape). The generator job writes both to ``<job>/generator/`` and logs them as the run's
``generator/`` artifacts; ``benchmark.run.sample`` reloads them to sample new label maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from benchmark.atomic import atomic_path, write_text_atomic
from benchmark.config import build_section, to_dict
from benchmark.errors import DataError
from benchmark.generators import get_generator_spec
from benchmark.generators.base import Generator

ARTIFACT_DIR = "generator"  # the run's artifact folder (and the job folder's sub-folder)
WEIGHTS, SETTINGS = "weights.pt", "generator.yaml"
FORMAT = "lge-synthbench-generator"


def save_generator(
    generator: Generator, name: str, num_classes: int, shape: tuple[int, ...], folder: str | Path
) -> list[Path]:
    """Write a trained generator's weights and settings.

    Args:
        generator: the trained generator (its ``networks``, ``cfg`` and ``state_extra()``).
        name: its registry name (``spade_ldm``, not a study variant such as ``spade_ldm@cavity_only``).
        num_classes: label values it was trained on (``0..num_classes-1``).
        shape: the (X, Y, Z) training shape; label maps it samples must have it.
        folder: where to write ``weights.pt`` and ``generator.yaml``.

    Returns:
        The two paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nets = {k: {p: t.detach().cpu() for p, t in net.state_dict().items()} for k, net in generator.networks.items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        torch.save({"format": FORMAT, "networks": nets, "extra": generator.state_extra()}, tmp)
    settings = {"generator": name, "num_classes": int(num_classes), "shape": [int(s) for s in shape],
                "config": to_dict(generator.cfg)}  # fmt: skip
    write_text_atomic(folder / SETTINGS, yaml.safe_dump(settings, sort_keys=False))
    return [folder / WEIGHTS, folder / SETTINGS]


def read_settings(folder: str | Path) -> dict[str, Any]:
    """Read and check ``generator.yaml``; raises ``DataError`` naming the file and key when it is not one."""
    path = Path(folder) / SETTINGS
    try:
        settings = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(path, f"cannot be read as generator settings ({type(exc).__name__})") from None
    for key, kind in (("generator", str), ("num_classes", int), ("shape", list), ("config", dict)):
        if not isinstance(settings, dict) or not isinstance(settings.get(key), kind):
            raise DataError(path, f"key {key!r} is missing or not a {kind.__name__}")
    return settings


def load_generator(folder: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, dict[str, Any]]:
    """Rebuild a generator written by ``save_generator``, in eval mode.

    Args:
        folder: holds ``weights.pt`` and ``generator.yaml``.
        device: where its networks go.

    Returns:
        The generator and its settings (``generator``, ``num_classes``, ``shape``, ``config``).
    """
    folder = Path(folder)
    settings = read_settings(folder)
    name = settings["generator"]
    spec = get_generator_spec(name)
    cfg = build_section(spec.config_cls, settings["config"], f"generators.{name}")
    model = spec.build(cfg, settings["num_classes"], tuple(settings["shape"]))
    path = folder / WEIGHTS
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise DataError(path, f"cannot be read as generator weights ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(path, f"is not a {FORMAT} file")
    if sorted(state["networks"]) != sorted(model.networks):
        raise DataError(path, f"holds networks {sorted(state['networks'])}, {name} has {sorted(model.networks)}")
    try:
        for key, net in model.networks.items():
            net.load_state_dict(state["networks"][key])
            net.to(device).eval()
    except RuntimeError as exc:
        raise DataError(path, f"does not fit {name} as {SETTINGS} describes it ({str(exc).splitlines()[0]})") from None
    model.load_state_extra(state["extra"])
    return model, settings
