"""The fields of a TRL config class (``DPOConfig``, ``SFTConfig``, ...): their types, defaults and help, read
from the installed dataclass so mipo's flags and checks follow TRL without a copied table.

``check_value`` checks one value against a field's annotation before anything is written: TRL takes
``DPOConfig(beta="abc")`` without a word and crashes inside training, after the output folder exists.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

from mipo.core.errors import ConfigError

# TrainingArguments fields mipo sets itself (from --out) or that make no sense to set through mipo.
NOT_SETTABLE = {"output_dir": "--out"}


def fields(config_class: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_class) if f.init}


def annotations(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class)


def default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _options(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def type_name(annotation: Any) -> str:
    """``int | None`` -> ``int or null``; ``list[str]`` -> ``list of str``."""
    names = []
    for option in _options(annotation):
        origin = typing.get_origin(option)
        if option is type(None):
            names.append("null")
        elif origin is typing.Literal:
            names.append(" or ".join(repr(a) for a in typing.get_args(option)))
        elif origin in (list, tuple):
            inner = typing.get_args(option)
            names.append(f"list of {type_name(inner[0])}" if inner else "list")
        elif origin is dict or option is dict:
            names.append("mapping")
        elif isinstance(option, type) and issubclass(option, enum.Enum):
            names.append("one of " + ", ".join(str(m.value) for m in option))
        else:
            names.append(getattr(option, "__name__", str(option)))
    return " or ".join(dict.fromkeys(names))


def _accepts(option: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits one member of a union, and the value to use (an int for a float field...)."""
    origin = typing.get_origin(option)
    if option is Any:
        return True, value
    if option is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(option), value
    if origin in (list, tuple):
        inner = typing.get_args(option)
        items = value if isinstance(value, list) else [value]  # one value for a list field: a list of one
        if not inner:
            return True, items
        try:
            return True, [check_value("", v, inner[0]) for v in items]
        except ConfigError:
            return False, value
    if origin is dict or option is dict:
        return isinstance(value, dict), value
    if option is bool:
        return isinstance(value, bool), value
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value  # an int stays one:
        # TRL reads some float fields differently when given an int (warmup_steps: steps, not a ratio)
    if option is str:
        return isinstance(value, str), value
    if isinstance(option, type) and issubclass(option, enum.Enum):
        return value in {m.value for m in option}, value
    return True, value  # a type mipo cannot check from a flag or YAML (e.g. ParallelismConfig): TRL checks it


def check_value(name: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (a scalar for a list field becomes a list of one); else a
    ``ConfigError`` naming the field and the expected type."""
    for option in _options(annotation):
        ok, converted = _accepts(option, value)
        if ok:
            return converted
    raise ConfigError(f"{name} must be {type_name(annotation)}, got {value!r}")


def check_mapping(config_class: type, values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Check every key of ``values`` names a field of ``config_class`` and every value fits its type."""
    known, hints = fields(config_class), annotations(config_class)
    for name, flag in NOT_SETTABLE.items():
        if name in values:
            raise ConfigError(f"{source}: {name} is set by {flag}")
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"{source}: unknown {config_class.__name__} field(s) {unknown}")
    return {k: check_value(f"{source}: {k}", v, hints[k]) for k, v in values.items()}


def first_sentence(text: str) -> str:
    """The first sentence of a TRL help text (the rest is in TRL's documentation)."""
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def flag_parser(annotation: Any) -> Callable[[str], Any]:
    """argparse ``type`` for a field: the text read as YAML (``1e-4`` as a number), or as the text itself
    where only that fits (``--run_name 123``); a value that fits neither is kept for ``check_mapping``'s
    one-line error."""

    def parse(text: str) -> Any:
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        for candidate in (value, text):
            try:
                return check_value("", candidate, annotation)
            except ConfigError:
                continue
        return value

    return parse
