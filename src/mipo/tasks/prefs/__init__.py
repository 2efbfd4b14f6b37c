"""``prefs``: personalization with preferences a program can verify.

``mipo.tasks.prefs.items`` holds the task (questions, the train/test split, the profiles, the score);
``mipo.tasks.prefs.checkers`` the preference types and their checkers.
"""

from mipo.tasks.prefs.checkers import PREFERENCE_TYPES, check_types, context_text, draw_profile, follows
from mipo.tasks.prefs.items import export_train_prompts, questions, score, task, train_records

__all__ = [
    "PREFERENCE_TYPES",
    "check_types",
    "context_text",
    "draw_profile",
    "export_train_prompts",
    "follows",
    "questions",
    "score",
    "task",
    "train_records",
]
