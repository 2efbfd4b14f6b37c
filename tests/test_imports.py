"""Every module imports, and `mipo --help` does not pull in torch."""

import importlib
import pkgutil
import subprocess
import sys

import mipo


def all_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages(mipo.__path__, prefix="mipo.") if m.name != "mipo.__main__"
    )


def test_every_module_imports():
    names = all_modules()
    assert "mipo.models" in names
    for name in names:
        importlib.import_module(name)


def test_cli_table_points_at_real_commands():
    from mipo.cli import COMMANDS

    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.configure_parser) and callable(module.main), name


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; from mipo.cli import main; main(['--help']) if False else None; "
        "import mipo.cli; mipo.cli.build_parser().format_help(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    helptext = subprocess.run([sys.executable, "-m", "mipo", "--help"], capture_output=True, text=True).stdout
    from mipo.cli import COMMANDS

    for command in COMMANDS:
        assert f"    {command}" in helptext
