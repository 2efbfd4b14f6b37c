"""The registry behind strategies, tasks, backends, objectives and judges."""

from __future__ import annotations

import pytest

from mipo.core.errors import ConfigError
from mipo.core.registry import Registry


def test_register_get_and_typo_lists_known_names():
    reg: Registry = Registry("widget")
    reg.register("b", 2)

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.get("b") == 2
    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")


def test_same_name_twice_is_refused_but_reregistering_the_same_object_is_not():
    reg: Registry = Registry("widget")
    reg.register("a", 1)
    reg.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)
    reg.unregister("a")
    reg.register("a", 2)
    assert reg.get("a") == 2


def test_builtins_are_the_modules_of_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "toyplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from mipo.core.registry import Registry\nREG = Registry('toy', 'toyplugins')\n"
    )
    (pkg / "first.py").write_text("from toyplugins import REG\nREG.register('first', 1)\n")
    (pkg / "_private.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import toyplugins

    assert toyplugins.REG.names() == ["first"]


def test_a_registry_is_an_argparse_choices_that_lists_its_names(capsys):
    import argparse

    reg: Registry = Registry("widget")
    reg.register("b", 2)
    reg.register("a", 1)
    assert list(reg) == ["a", "b"] and len(reg) == 2
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--widget", choices=reg)
    assert parser.parse_args(["--widget", "a"]).widget == "a"
    with pytest.raises(SystemExit):
        parser.parse_args(["--widget", "c"])
    assert "invalid choice: 'c' (choose from a, b)" in capsys.readouterr().err.replace("'a', 'b'", "a, b")
