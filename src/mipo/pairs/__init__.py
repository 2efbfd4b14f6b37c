"""The pairs stage: MIPO preference pairs from prompt records (``mipo pairs``).

For each prompt the model's reply is *chosen* and its reply to a negative prompt (``strategies/``) is
*rejected*; rows are written in TRL's conversational format (``mipo.formats.pairs_file`` reads them).
"""

from mipo.pairs.build import build_pairs, run_pairs
from mipo.pairs.config import PairsConfig, PairsSummary

__all__ = ["PairsConfig", "PairsSummary", "build_pairs", "run_pairs"]
