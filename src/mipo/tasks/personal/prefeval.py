"""``prefeval``: PrefEval (Zhao et al., ICLR 2025), ``siyanzhao/prefeval_explicit`` by default.

Three Hub repositories, 1,000 rows each, one Parquet file: ``prefeval_explicit`` (``preference``,
``question``, ``explanation``, ``topic``, ``preference_type``), ``prefeval_implicit_choice`` and
``prefeval_implicit_persona`` (the same plus the conversation that reveals the preference indirectly). A
record is the question with the user's stated ``preference`` as the context, for every form: mipo measures
whether a reply uses a context it is given, not whether a model infers a preference from a long
conversation. The rows have no id: a record's id is its row number; users are split by their preference.
"""

from __future__ import annotations

from typing import Any

from mipo.tasks.personal.common import PersonalDataset, load_table, register, text


def records(source: str) -> list[dict[str, Any]]:
    out = []
    for number, row in enumerate(load_table(DATASET, source, required=("question", "preference")), start=1):
        prompt, context = text(row.get("question")), text(row.get("preference"))
        if prompt is None or context is None:
            continue
        meta = {
            "user": context,
            "topic": row.get("topic"),
            "preference_type": row.get("preference_type"),
            "explanation": row.get("explanation"),
            "dataset": "prefeval",
        }
        out.append({"id": f"prefeval-{number:04d}", "prompt": prompt, "context": context, "meta": meta})
    return out


DATASET = register(
    PersonalDataset(
        "prefeval",
        "siyanzhao/prefeval_explicit",
        "PrefEval: questions with the user's stated preference (unscored)",
        records,
    )
)
