"""The generator registry: one ``register`` line per generator (see ``base.GeneratorSpec``), and the conditioning
variants a study may run beside a generator (``spade_ldm@cavity_only``)."""

from __future__ import annotations

from typing import Any

from benchmark.errors import ConfigError
from benchmark.generators import labels2image, pix2pix3d, spade_gan, spade_ldm
from benchmark.generators.base import GeneratorConfig, GeneratorSpec

GENERATORS: dict[str, GeneratorSpec] = {}

# ``<generator>@<variant>``: the same generator and settings, trained and sampled on other label maps; each variant
# is the ``composite`` settings it replaces (``Study.label_maps``). cavity_only: the expert cavity and wall alone
# (the paper's Fig. 5 ablation)
VARIANTS: dict[str, dict[str, Any]] = {"cavity_only": {"k": 0}}


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


def split_generator_name(name: str) -> tuple[GeneratorSpec, str | None]:
    """The registry entry and the variant of a study's generator name.

    Args:
        name: a key of ``GENERATORS`` (``spade_ldm``) or ``<generator>@<variant>`` with a key of ``VARIANTS``
            (``spade_ldm@cavity_only``); anything else raises ``ConfigError`` listing the choices.

    Returns:
        ``(spec, variant)``; the variant is None for a plain generator name.
    """
    base, sep, variant = name.partition("@")
    spec = get_generator_spec(base)
    if sep and variant not in VARIANTS:
        raise ConfigError(f"generator {name!r}: unknown variant {variant!r}; choices: {', '.join(sorted(VARIANTS))}")
    return spec, (variant if sep else None)


def check_copies(name: str, gen_cfg: GeneratorConfig, copies: int) -> None:
    """Refuse several volumes per label map from a generator whose ``sample`` ignores its noise.

    Args:
        name: the generator's study name (named in the message).
        gen_cfg: its settings (``GeneratorConfig.deterministic_sampling``).
        copies: volumes asked for per label map (``segmentation.ratios`` above 1 ask for several).
    """
    if copies > 1 and gen_cfg.deterministic_sampling:
        raise ConfigError(
            f"segmentation.ratios: a ratio above 1 needs {copies} different volumes per label map, but {name} samples "
            f"deterministically (every copy would be the same volume); leave {name} out (--generators) or keep "
            "ratios <= 1"
        )
