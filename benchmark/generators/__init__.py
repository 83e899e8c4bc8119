"""The generator registry: one ``register`` line per generator (see ``base.GeneratorSpec``)."""

from __future__ import annotations

from benchmark.errors import ConfigError
from benchmark.generators import labels2image, pix2pix3d, spade_gan, spade_ldm
from benchmark.generators.base import GeneratorConfig, GeneratorSpec

GENERATORS: dict[str, GeneratorSpec] = {}


def register(spec: GeneratorSpec) -> GeneratorSpec:
    """Add a generator to ``GENERATORS``.

    Args:
        spec: its registry entry; ``spec.config_cls`` must subclass ``GeneratorConfig`` and define ``tiny()``.

    Returns:
        ``spec``. Raises ``ConfigError`` on a name already registered or a config class outside the contract.
    """
    if spec.name in GENERATORS:
        held = GENERATORS[spec.name].build
        raise ConfigError(f"generator {spec.name!r} is already registered (by {held.__module__}.{held.__qualname__})")
    if not (isinstance(spec.config_cls, type) and issubclass(spec.config_cls, GeneratorConfig)):
        raise ConfigError(f"generator {spec.name!r}: its config class must subclass GeneratorConfig")
    if spec.config_cls.tiny.__func__ is GeneratorConfig.tiny.__func__:
        raise ConfigError(f"generator {spec.name!r}: {spec.config_cls.__name__} defines no tiny() classmethod")
    GENERATORS[spec.name] = spec
    return spec


register(GeneratorSpec("pix2pix3d", pix2pix3d.Pix2PixConfig, pix2pix3d.build))
register(GeneratorSpec("spade_gan", spade_gan.SpadeGanConfig, spade_gan.build))
register(GeneratorSpec("spade_ldm", spade_ldm.SpadeLdmConfig, spade_ldm.build))
register(GeneratorSpec("labels2image", labels2image.Labels2ImageConfig, labels2image.build))


def get_generator_spec(name: str) -> GeneratorSpec:
    """Look up a generator by name.

    Args:
        name: a key of ``GENERATORS``; an unknown name raises ``ConfigError`` listing the choices.
    """
    if name not in GENERATORS:
        raise ConfigError(f"generator {name!r} is unknown; choices: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]
