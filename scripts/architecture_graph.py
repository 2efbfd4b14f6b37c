"""Print the layer picture of docs/architecture.md (a Mermaid flowchart) from mipo's import graph.

Each box is a top-level part of ``mipo``; an arrow A --> B means some module of A imports some module of B
(imports under ``if TYPE_CHECKING`` are left out: they never run). The boxes stand in the layers of
pyproject.toml's import-linter contract, top to bottom. ``tests/test_imports.py`` checks that the picture in
docs/architecture.md is this script's output, so it cannot drift from the code:

    .venv/bin/python scripts/architecture_graph.py > /tmp/graph.md   # then paste it into the doc
"""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def layers() -> list[list[str]]:
    """The layers of the import-linter contract, each a list of top-level parts (``mipo.`` dropped)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[part.strip().removeprefix("mipo.") for part in layer.split("|")] for layer in contract["layers"]]


def part_imports() -> set[tuple[str, str]]:
    """(A, B) for every top-level part A of mipo that imports from another part B."""
    import grimp

    graph = grimp.build_graph("mipo", exclude_type_checking_imports=True)
    parts = {name for layer in layers() for name in layer}

    def part(module: str) -> str | None:
        pieces = module.split(".")
        return pieces[1] if len(pieces) > 1 and pieces[1] in parts else None

    edges = set()
    for module in graph.modules:
        source = part(module)
        for imported in graph.find_modules_directly_imported_by(module):
            target = part(imported)
            if source and target and source != target:
                edges.add((source, target))
    return edges


def mermaid() -> str:
    lines = ["```mermaid", "flowchart TD"]
    for number, layer in enumerate(layers(), start=1):
        lines.append(f'    subgraph L{number}["layer {number}"]')
        lines.extend(f"        {name}" for name in layer)
        lines.append("    end")
    lines.extend(f"    {a} --> {b}" for a, b in sorted(part_imports()))
    lines.append("```")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
