"""The generator registry: one line per generator (see ``base.GeneratorSpec``)."""

from __future__ import annotations

from benchmark.generators.base import GeneratorSpec

GENERATORS: dict[str, GeneratorSpec] = {}


def get_generator_spec(name: str) -> GeneratorSpec:
    """Look up a generator by name; an unknown name lists the choices."""
    from benchmark.errors import ConfigError

    if name not in GENERATORS:
        raise ConfigError(f"generator {name!r} is unknown; choices: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]
