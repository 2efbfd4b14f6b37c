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

from mipo.core.errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default and a help line (lists and dicts get a factory).

    Metadata read by ``add_config_arguments`` and ``from_dict``:
    ``required=True``: the help prints "(required)" instead of a default;
    ``negatable=False``: a boolean is a plain ``--flag`` with no ``--no-flag`` form;
    ``aliases=("--x",)``: more flags for the field, each also accepted as a YAML key (``x``);
    ``underscore=True``: the flag is spelled as the field (``--max_length``, a library's own name), with the
    dashed spelling as an alias; ``default_text``: what the help says the default is, where ``default`` is
    ``None`` because the real one is decided later (``"2e-4 with LoRA"``);
    ``rest=predicate``: a dict field that collects the keys no field has and ``predicate(key)`` accepts.
    """
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


def flag_names(f: dataclasses.Field) -> list[str]:
    """The flags of a field: its own name first, then the aliases."""
    dashed = flag_name(f.name)
    own = [f"--{f.name}", dashed] if f.metadata.get("underscore") and "_" in f.name else [dashed]
    return [*own, *f.metadata.get("aliases", ())]


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def help_text(f: dataclasses.Field) -> str:
    """The field's help line with its real default (or "(required)"); no "(default: None)"."""
    text = f.metadata.get("help", "")
    if f.metadata.get("required"):
        return f"{text} (required)"
    shown = f.metadata.get("default_text")
    if shown is None:
        default = field_default(f)
        shown = None if default is None else repr(default)
    return f"{text} (default: {shown})" if shown is not None else text


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of ``cls``; every flag defaults to ``None`` so YAML values are kept."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        add_argument(parser, flag_names(f), f.name, hints[f.name], help_text(f), f.metadata)


def add_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: list[str],
    dest: str,
    annotation: Any,
    help: str,
    metadata: Any = None,
) -> None:
    """One flag for a setting of type ``annotation`` (default ``None``: "not given on the command line")."""
    metadata = metadata or {}
    kind = _base_type(annotation)
    if kind is bool and metadata.get("negatable", True):
        action: Any = argparse.BooleanOptionalAction
        parser.add_argument(*names, dest=dest, action=action, default=None, help=help)
    elif kind is bool:
        parser.add_argument(*names, dest=dest, action="store_true", default=None, help=help)
    elif kind is list:
        parser.add_argument(
            *names, dest=dest, default=None, type=_comma_list, help=help + "; comma-separated"
        )
    elif kind is dict:
        parser.add_argument(*names, dest=dest, default=None, type=_key_values, help=help + "; key=value,...")
    else:
        choices = metadata.get("choices")
        parser.add_argument(
            *names,
            dest=dest,
            default=None,
            type=kind if kind in (int, float) else str,
            choices=choices,
            help=help,
            metavar=dest.rsplit(".", 1)[-1].upper() if not choices else None,
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


def aliases(cls: type) -> dict[str, str]:
    """YAML keys that name a field under another spelling (its flag aliases): ``{"batch_size": "per_device_..."}``."""
    out = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        for alias in f.metadata.get("aliases", ()):
            out[alias.lstrip("-").replace("-", "_")] = f.name
    return out


def _rest_field(cls: type) -> dataclasses.Field | None:
    return next((f for f in dataclasses.fields(cls) if f.metadata.get("rest")), None)  # type: ignore[arg-type]


def normalize(cls: type, values: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Keys spelled as field names: aliases renamed, keys for the ``rest`` mapping moved into it, unknown
    keys refused (one ``ConfigError`` naming them all)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    renamed, rest_field = aliases(cls), _rest_field(cls)
    out: dict[str, Any] = {}
    moved: dict[str, Any] = {}
    problems = []
    for key, value in values.items():
        name = key.replace("-", "_")
        name = renamed.get(name, name)
        if name in out:
            problems.append(f"'{key}' is set twice (as {name} and an alias of it)")
        elif name in names:
            out[name] = value
        elif rest_field is not None and rest_field.metadata["rest"](name):
            moved[name] = value
        else:
            close = [n for n in names if n.startswith(name[:3])]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            problems.append(f"unknown key '{key}'{hint}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    if moved:
        inner = dict(out.get(rest_field.name) or {})
        twice = sorted(set(inner) & set(moved))
        if twice:
            raise ConfigError(
                f"{source}: {', '.join(twice)} set both at the top level and under {rest_field.name}"
            )
        out[rest_field.name] = {**inner, **moved}
    return out


def from_dict(cls: type[C], values: dict[str, Any], *, source: str = "config") -> C:
    """Build ``cls`` from a mapping, refusing unknown keys and coercing simple types."""
    hints = _field_types(cls)
    problems, kwargs = [], {}
    for name, value in normalize(cls, values, source=source).items():
        kind = _base_type(hints[name])
        if value is not None and kind in (int, float, str, bool, list, dict):
            try:
                value = _coerce(value, kind)
            except (TypeError, ValueError):
                problems.append(f"'{name}' must be {kind.__name__}, got {value!r}")
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
    if kind is str and isinstance(value, (list, tuple)):  # a YAML list for a comma-separated setting
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise TypeError(value)
        return ",".join(str(v) for v in value)
    if kind is str and isinstance(value, dict):
        raise TypeError(value)
    return kind(value)


def resolve(
    cls: type[C],
    args: argparse.Namespace | None = None,
    *,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Defaults <- YAML file <- explicit flags (those not left at ``None``) <- overrides.

    A flag whose ``dest`` is ``"field.key"`` sets ``key`` inside the mapping ``field``, over the YAML's; a
    dict flag for the ``rest`` mapping is merged into the YAML's rather than replacing it.
    """
    source = str(yaml_path) if yaml_path else "config"
    values = normalize(cls, load_yaml(yaml_path), source=source) if yaml_path else {}
    if args is not None:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        rest = _rest_field(cls)
        for key, value in vars(args).items():
            if value is None:
                continue
            if key in names and rest is not None and key == rest.name:
                values[key] = {**(values.get(key) or {}), **value}
            elif key in names:
                values[key] = value
            elif "." in key and key.split(".", 1)[0] in names:
                field, inner = key.split(".", 1)
                values[field] = {**(values.get(field) or {}), inner: value}
    values.update(overrides or {})
    return from_dict(cls, values, source=source)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def require(problems: list[str]) -> None:
    """Raise one ``ConfigError`` naming every collected problem (call at the end of ``__post_init__``)."""
    if problems:
        raise ConfigError("; ".join(problems))
