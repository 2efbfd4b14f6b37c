"""Real users' contexts from the paper's personalization data, loaded by Hub id or from a local copy:

- ``prism``: PRISM (``HannahRoseKirk/prism-alignment``), each user's survey text and opening prompts
- ``community-alignment``: Community Alignment (``facebook/community-alignment-dataset``), annotators
- ``multifaceted-bench``: Multifaceted Bench (``kaist-ai/Multifaceted-Bench``), system-message personas
- ``prefeval``: PrefEval (``siyanzhao/prefeval_explicit``; the implicit forms by Hub id), stated preferences

Each is an evaluation task (its test users; unscored: the LLM judge, PMI and context PMI compare replies),
a source of MIPO train prompts (its train users: ``mipo pairs --prompts prism``, or the task's export) and
a prompt source (``--prompts prism:FOLDER --split test``). Schemas and licences: docs/datasets.md.
"""

from mipo.tasks.personal import community_alignment, multifaceted_bench, prefeval, prism
from mipo.tasks.personal.common import PersonalDataset, prompt_records, resolve_source

__all__ = [
    "PersonalDataset",
    "community_alignment",
    "multifaceted_bench",
    "prefeval",
    "prism",
    "prompt_records",
    "resolve_source",
]
