"""YAML <-> nested dataclasses, with command-line overrides that go through the same dataclasses.

A typo in a YAML key or an override is an error that lists the allowed keys, not a silent default.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the dataclass it configures."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config", base: T | None = None) -> T:
    """Build dataclass `cls` from a mapping; nested dataclasses recurse, tuples are converted.

    Keys the mapping leaves out keep `base`'s values (default: the class's defaults). A nested section
    starts from its field's own default, so `--set obstacle.max_iterations=9` keeps what the obstacle
    field's default_factory sets (its evaluation landing) rather than a bare StageConfig's."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}: {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(types_)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind = types_[name]
        if dataclasses.is_dataclass(kind):
            start = getattr(base, name) if base is not None else _field_default(fields[name])
            start = start if isinstance(start, kind) else None  # type: ignore[arg-type]
            kwargs[name] = from_dict(kind, value, f"{where}.{name}", start)  # type: ignore[arg-type]
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif kind is float and isinstance(value, int | str) and not isinstance(value, bool):
            # YAML 1.1 reads '3e-4' as a string; a float field takes it as a number.
            try:
                kwargs[name] = float(value)
            except ValueError:
                raise ConfigError(f"{where}.{name}: expected a number, got {value!r}") from None
        else:
            kwargs[name] = value
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain YAML-safe dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a config mapping for `cls`."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override '{item}' must look like section.key=value (e.g. ppo.learning_rate=3e-4)"
            )
        parts = key.split(".")
        node, kind = data, cls
        for depth, part in enumerate(parts):
            allowed = _field_types(kind)
            if part not in allowed:
                raise ConfigError(f"override '{item}': unknown key '{part}'; allowed here: {sorted(allowed)}")
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(raw)
            else:
                kind = allowed[part]
                if not dataclasses.is_dataclass(kind):
                    raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
                node = node.setdefault(part, {})
    return data


def load_config_file(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Dataclass `cls` from a YAML file with `dotted.key=value` overrides applied."""
    data = apply_overrides(load_yaml(path), overrides or [], cls)
    return from_dict(cls, data, str(path))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
