"""``community-alignment``: Community Alignment (Zhang et al., 2025), ``facebook/community-alignment-dataset``.

One CSV row a conversation of one annotator: ``conversation_id``, ``annotator_id``, ``assigned_lang``,
``is_pregenerated_first_prompt``, ``first_turn_prompt``, ``first_turn_response_a``..``_d``,
``first_turn_preferred_response`` (``response_a``...) and the later turns likewise, plus the annotator's
answers about themself (``annotator_age``, ``annotator_gender``, ``annotator_country``, ...). A record is a
conversation's first prompt with its annotator's profile as the context; many annotators answered the same
pregenerated prompt, so one question comes with many users' contexts.
"""

from __future__ import annotations

from typing import Any

from mipo.tasks.personal.common import PersonalDataset, load_table, register, text

# The profile's fields in this order, with the words for each; other annotator_* columns follow.
PROFILE_FIELDS = {
    "annotator_age": "age",
    "annotator_gender": "gender",
    "annotator_country": "country",
    "annotator_education_level": "education",
    "annotator_political": "political views",
    "annotator_ethnicity": "ethnicity",
}
NOT_PROFILE = ("annotator_id",)
REQUIRED = ("conversation_id", "annotator_id", "first_turn_prompt")
SPLITS = ("train", "filtered", "full")  # v1.1 has one file (train); v1.0 had the filtered and full splits


def context_text(row: dict[str, Any]) -> str | None:
    """``About me: age: 25-34; gender: female; country: India; ...`` from the annotator_* columns."""
    extra = sorted(
        k for k in row if k.startswith("annotator_") and k not in PROFILE_FIELDS and k not in NOT_PROFILE
    )
    labels = {**PROFILE_FIELDS, **{k: k.removeprefix("annotator_").replace("_", " ") for k in extra}}
    facts = [f"{label}: {text(row.get(key))}" for key, label in labels.items() if text(row.get(key))]
    return "About me: " + "; ".join(facts) + "." if facts else None


def records(source: str) -> list[dict[str, Any]]:
    out = []
    for row in load_table(DATASET, source, splits=SPLITS, required=REQUIRED):
        prompt, user, context = (
            text(row.get("first_turn_prompt")),
            text(row.get("annotator_id")),
            context_text(row),
        )
        if prompt is None or user is None or context is None:
            continue
        meta = {
            "user": user,
            "language": text(row.get("assigned_lang")),
            "pregenerated_prompt": row.get("is_pregenerated_first_prompt"),
            "dataset": "community-alignment",
        }
        out.append({"id": str(row["conversation_id"]), "prompt": prompt, "context": context, "meta": meta})
    return out


DATASET = register(
    PersonalDataset(
        "community-alignment",
        "facebook/community-alignment-dataset",
        "Community Alignment: annotators' first prompts with their self-reported profile (unscored)",
        records,
    )
)
