"""``multifaceted-bench``: Multifaceted Bench (Lee et al., 2024, the Janus paper), ``kaist-ai/Multifaceted-Bench``.

One Parquet row an instruction with a synthetic user's preferences: ``source``, ``preference_set`` (four
``{dimension, subdimension, preference, description}``), ``system`` (a system message written from those
preferences), ``prompt``, ``reference_answer`` and ``rubrics`` (four ``{criteria, score_descriptions}``).
The rows have no id: a record's id is its row number. The context is the ``system`` message, as the
benchmark's authors give it to the model. The same instruction comes with several preference sets, so the
split is by instruction: a question trained on is never evaluated.
"""

from __future__ import annotations

from typing import Any

from mipo.tasks.personal.common import PersonalDataset, load_table, register, text


def records(source: str) -> list[dict[str, Any]]:
    out = []
    for number, row in enumerate(load_table(DATASET, source, required=("prompt", "system")), start=1):
        prompt, context = text(row.get("prompt")), text(row.get("system"))
        if prompt is None or context is None:
            continue
        meta = {
            "user": prompt,  # the unit of the split: the instruction
            "source": row.get("source"),
            "preference_set": row.get("preference_set"),
            "reference_answer": row.get("reference_answer"),
            "rubrics": row.get("rubrics", row.get("rubric")),  # named "rubric" in early revisions
            "dataset": "multifaceted-bench",
        }
        out.append({"id": f"mfb-{number:04d}", "prompt": prompt, "context": context, "meta": meta})
    return out


DATASET = register(
    PersonalDataset(
        "multifaceted-bench",
        "kaist-ai/Multifaceted-Bench",
        "Multifaceted Bench: instructions with a system message written from a user's preferences (unscored)",
        records,
    )
)
