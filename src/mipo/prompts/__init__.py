"""Prompt records ``{id, prompt, context?, system?, answer?, meta?}``: read from any source, turned into chats."""

from mipo.prompts.records import CONTEXT_MODES, PromptRecord, load_prompts, to_conversation

__all__ = ["CONTEXT_MODES", "PromptRecord", "load_prompts", "to_conversation"]
