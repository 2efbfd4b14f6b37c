"""Negative strategies moved to ``mipo.strategies`` (one module per strategy, one registry); these names
stay importable from here."""

from mipo.strategies import STRATEGIES, NegativeError  # noqa: F401  # moved: mipo.strategies
from mipo.strategies._derangement import cyclic_derangement  # noqa: F401  # moved
from mipo.strategies.drop_sentence import (  # noqa: F401  # moved
    drop_sentence,
    drop_sentence_negatives,
    split_sentences,
)
from mipo.strategies.incomplete import incomplete_negative  # noqa: F401  # moved
from mipo.strategies.other_context import other_context_negatives  # noqa: F401  # moved
from mipo.strategies.random_prompt import random_negatives  # noqa: F401  # moved
