"""The generic typed-config machinery behind ``benchmark.config``: dataclass sections built from nested dicts.

``build_section`` walks a ``kw_only`` dataclass's fields, so an unknown key, a value of the wrong type or a
choice outside a ``Literal`` fails with the key's full path and the allowed choices. A field whose metadata
says ``registry="generators"`` is a mapping of generator name -> that generator's own config class (from the
``GENERATORS`` registry). YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmark.atomic import write_text_atomic
from benchmark.errors import ConfigError


def _generator_registry() -> dict[str, type]:
    from benchmark.generators import GENERATORS  # lazy: generator modules never import this file's loader

    return {name: spec.config_cls for name, spec in GENERATORS.items()}


def registry_defaults() -> dict[str, Any]:
    """Every registered generator's default config, by name (the default of a ``registry`` field)."""
    return {name: cls() for name, cls in _generator_registry().items()}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert lists to tuples; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of the allowed choices: {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} does not match {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return build_section(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def build_section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from defaults updated by ``values`` (a possibly partial nested dict)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{path}: unknown key; allowed keys here: {allowed}")
        fld = fields[key]
        if fld.metadata.get("registry") == "generators":
            kwargs[key] = _build_registry(value, path)
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[key] = build_section(tp, value, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ checks name their key as "<section>.<key>"; complete that to the full path
        msg, head = str(exc), prefix.rsplit(".", 1)
        if prefix and msg.startswith(head[-1] + "."):
            msg = f"{head[0]}.{msg}" if len(head) == 2 else msg
        elif prefix:
            msg = f"{prefix}.{msg}"
        raise ConfigError(msg) from None


def _build_registry(value: Any, path: str) -> dict[str, Any]:
    registry = _generator_registry()
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of generator name -> settings, got {value!r}")
    out = {}
    for name, sub in value.items():
        if name not in registry:
            raise ConfigError(f"{path}.{name}: unknown generator; choices: {', '.join(sorted(registry))}")
        if dataclasses.is_dataclass(sub):
            out[name] = sub
        else:
            out[name] = build_section(registry[name], sub or {}, f"{path}.{name}")
    for name, cls in registry.items():
        out.setdefault(name, cls())
    return out


def deep_update(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    for key, value in upd.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1,2]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: overrides are key=value (e.g. preprocess.shape=[32,32,16])")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; a python tag or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML for the safe loader: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def to_dict(cfg: Any) -> Any:
    """A plain (JSON/YAML-safe) dict of a config: tuples become lists.

    A field with ``metadata={"omit_at_default": True}`` is left out while it holds its default, so that adding such
    a key keeps the config hashes (and job hashes) of studies made before it.
    """
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if not _omitted(cfg, f)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    return cfg


def config_hash(cfg: Any) -> str:
    """A short stable hash of a config (or any section of one)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: Any, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to an output (atomically: write then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    write_text_atomic(target, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return target


def _omitted(cfg: Any, f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("omit_at_default")) and getattr(cfg, f.name) == f.default


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat ``{"a.b": value}`` view of a config, for tracking params."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(cfg) or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
