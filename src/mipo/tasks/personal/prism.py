"""``prism``: PRISM (Kirk et al., 2024), ``HannahRoseKirk/prism-alignment``.

The repository holds ``survey.jsonl`` (one row a user: ``user_id``, ``self_description``,
``system_string``, demographics...) and ``conversations.jsonl`` (one row a conversation: ``conversation_id``,
``user_id``, ``conversation_type``, ``opening_prompt``, ``conversation_history``...), joined by ``user_id``.
A record is a conversation's opening prompt, with its user's context: the self-description (who they are,
what they value) and the system string (how they asked an AI to behave), both written by the user.
"""

from __future__ import annotations

from typing import Any

from mipo.tasks.personal.common import PersonalDataset, load_table, register, text

SURVEY_COLUMNS = ("user_id", "self_description", "system_string")
CONVERSATION_COLUMNS = (
    "conversation_id",
    "user_id",
    "conversation_type",
    "opening_prompt",
    "conversation_history",
)


def context_text(self_description: str | None, system_string: str | None) -> str | None:
    parts = []
    if self_description:
        parts.append(f"About me: {self_description}")
    if system_string:
        parts.append(f"How I want an AI assistant to behave: {system_string}")
    return "\n".join(parts) or None


def opening_prompt(conversation: dict[str, Any]) -> str | None:
    """The ``opening_prompt`` field, else the first user turn of ``conversation_history``."""
    found = text(conversation.get("opening_prompt"))
    if found:
        return found
    for turn in conversation.get("conversation_history") or []:
        if isinstance(turn, dict) and turn.get("role") == "user" and text(turn.get("content")):
            return text(turn["content"])
    return None


def records(source: str) -> list[dict[str, Any]]:
    survey = load_table(
        DATASET,
        source,
        data_file="survey.jsonl",
        saved_name="survey",
        columns=SURVEY_COLUMNS,
        required=("user_id",),
    )
    contexts = {
        str(row["user_id"]): context_text(text(row.get("self_description")), text(row.get("system_string")))
        for row in survey
    }
    conversations = load_table(
        DATASET,
        source,
        data_file="conversations.jsonl",
        saved_name="conversations",
        columns=CONVERSATION_COLUMNS,
        required=("conversation_id", "user_id"),
    )
    out = []
    for conversation in conversations:
        user = str(conversation["user_id"])
        prompt, context = opening_prompt(conversation), contexts.get(user)
        if prompt is None or context is None:  # a user with no survey row, or an empty turn
            continue
        meta = {"user": user, "conversation_type": conversation.get("conversation_type"), "dataset": "prism"}
        out.append(
            {"id": str(conversation["conversation_id"]), "prompt": prompt, "context": context, "meta": meta}
        )
    return out


DATASET = register(
    PersonalDataset(
        "prism",
        "HannahRoseKirk/prism-alignment",
        "PRISM: real users' opening prompts with their self-description and system string (unscored)",
        records,
    )
)
