"""Moved: reading pairs files is ``mipo.pairs_file``."""

from mipo.pairs_file import read_pairs  # noqa: F401  # moved: mipo.pairs_file
