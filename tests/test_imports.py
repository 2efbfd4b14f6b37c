"""Every module imports, no two modules import each other (directly or round a circle), and `mipo --help`
does not pull in torch. The layers themselves are held by import-linter (`make lint`, pyproject.toml)."""

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
    assert "mipo.engine.models" in names
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


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle():
    import grimp

    # Imports under ``if TYPE_CHECKING`` never run, so they close no circle.
    graph = grimp.build_graph("mipo", exclude_type_checking_imports=True)
    assert "mipo.engine.generation" in graph.modules
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, module):
            return self.edges.get(module, set())

    assert import_cycles(Graph()) == [["a", "b", "c"]]


def test_the_package_root_holds_only_the_entry_points():
    from pathlib import Path

    root = Path(mipo.__file__).parent
    assert sorted(p.name for p in root.glob("*.py")) == [
        "__init__.py",
        "__main__.py",
        "cli.py",
        "demo.py",
    ]
    too_long = {
        str(p.relative_to(root)): n
        for p in root.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450
    }
    assert too_long == {}


def test_the_architecture_picture_is_drawn_from_the_import_graph():
    """docs/architecture.md shows scripts/architecture_graph.py's output: rerun it when the layers change."""
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = runpy.run_path(str(root / "scripts" / "architecture_graph.py"))
    doc = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert script["mermaid"]() in doc
