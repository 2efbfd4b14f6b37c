"""Registries: name -> implementation, for every place mipo grows by one file.

Negative strategies, evaluation tasks, generation backends, training objectives and judges are each a
``Registry``. A built-in is a module in the registry's package that registers itself on import; the
registry imports its package's modules the first time a name is looked up, so ``mipo --help`` stays light.
Code outside mipo registers the same way (``@STRATEGIES.register("mine")``) or through an entry point in
the group ``mipo.<last part of the package>`` (e.g. ``mipo.strategies``), loaded on first look-up like the built-ins.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mipo.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to implementations of one kind, with an error listing the known names on a typo."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind  # "negative strategy", "task", ... (used in messages)
        self.package = package  # the package whose modules are the built-ins
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """``REGISTRY.register("name", obj)``, or ``@REGISTRY.register("name")`` as a decorator."""
        if item is not None:
            self._add(name, item)
            return item

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def _add(self, name: str, item: T) -> None:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        self.load()
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The known names, so a registry serves as an argparse ``choices`` (a typo lists them)."""
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def load(self) -> None:
        """Import the built-in modules and the ``mipo.<group>`` entry points, once."""
        if self._loaded:
            return
        self._loaded = True
        if self.package:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        from importlib.metadata import entry_points

        group = "mipo." + (self.package or self.kind).rsplit(".", 1)[-1]
        for point in entry_points(group=group):
            point.load()
