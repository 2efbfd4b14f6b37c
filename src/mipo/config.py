"""Configs are dataclasses: defaults, then a YAML file, then command-line flags.

Each field carries its help text in ``metadata["help"]``; that text becomes the flag's ``--help``.
Unknown keys are refused, and ``validate`` collects every problem before raising one ``ConfigError``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from mipo.errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default and a help line (lists and dicts get a factory)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **metadata}
        )
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``; ``list[str]`` -> ``list``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return origin or tp


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls``; every flag defaults to ``None`` so YAML values are kept."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        names = [flag_name(f.name), *f.metadata.get("aliases", ())]
        if kind is bool:
            parser.add_argument(
                *names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif kind is list:
            parser.add_argument(
                *names, dest=f.name, default=None, type=_comma_list, help=help_text + "; comma-separated"
            )
        elif kind is dict:
            parser.add_argument(
                *names, dest=f.name, default=None, type=_key_values, help=help_text + "; key=value,..."
            )
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(
                *names,
                dest=f.name,
                default=None,
                type=kind if kind in (int, float) else str,
                choices=choices,
                help=help_text,
                metavar=f.name.upper() if not choices else None,
            )


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _key_values(text: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in _comma_list(text):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def from_dict(cls: type[C], values: dict[str, Any], *, source: str = "config") -> C:
    """Build ``cls`` from a mapping, refusing unknown keys and coercing simple types."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _field_types(cls)
    problems, kwargs = [], {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            close = [n for n in names if n.startswith(name[:3])]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            problems.append(f"unknown key '{key}'{hint}")
            continue
        kind = _base_type(hints[name])
        if value is not None and kind in (int, float, str, bool, list, dict):
            try:
                value = _coerce(value, kind)
            except (TypeError, ValueError):
                problems.append(f"'{key}' must be {kind.__name__}, got {value!r}")
                continue
        kwargs[name] = value
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return cls(**kwargs)


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(value)
    if kind is list:
        return _comma_list(value) if isinstance(value, str) else list(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise TypeError(value)
        return value
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, bool):
        raise TypeError(value)
    return kind(value)


def resolve(
    cls: type[C],
    args: argparse.Namespace | None = None,
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Defaults <- YAML file <- explicit flags (those not left at ``None``) <- overrides."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    if args is not None:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    values.update(overrides or {})
    return from_dict(cls, values, source=str(yaml_path) if yaml_path else "config")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def require(problems: list[str]) -> None:
    """Raise one ``ConfigError`` naming every collected problem (call at the end of ``__post_init__``)."""
    if problems:
        raise ConfigError("; ".join(problems))
