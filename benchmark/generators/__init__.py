"""The generator registry: one line per generator (see ``base.GeneratorSpec``)."""

from __future__ import annotations

from benchmark.generators import pix2pix3d, spade_gan, spade_ldm
from benchmark.generators.base import GeneratorSpec

GENERATORS: dict[str, GeneratorSpec] = {
    "pix2pix3d": GeneratorSpec("pix2pix3d", pix2pix3d.Pix2PixConfig, pix2pix3d.build),
    "spade_gan": GeneratorSpec("spade_gan", spade_gan.SpadeGanConfig, spade_gan.build),
    "spade_ldm": GeneratorSpec("spade_ldm", spade_ldm.SpadeLdmConfig, spade_ldm.build),
}


def get_generator_spec(name: str) -> GeneratorSpec:
    """Look up a generator by name; an unknown name lists the choices."""
    from benchmark.errors import ConfigError

    if name not in GENERATORS:
        raise ConfigError(f"generator {name!r} is unknown; choices: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]
