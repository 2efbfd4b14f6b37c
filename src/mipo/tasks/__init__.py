"""Evaluation tasks: items to answer, and how to score an answer. One module (or package) per task:

- ``prefs``: personalization with verifiable preferences (``mipo.tasks.prefs``)
- ``ifeval``: personalization with IFEval's instructions, checked by IFEval's code (``mipo.tasks.ifeval``)
- ``gsm8k``: math word problems, exact final number (``mipo.tasks.gsm8k``)
- ``arc-easy``, ``arc-challenge``, ``mmlu``: multiple choice (``mipo.tasks.multiple_choice``)
- ``pmi``: the MIPO objective on held-out prompts (``mipo.tasks.pmi``; scored in ``mipo.engine.pmi``)
- ``file:PATH``: the user's own math or multiple-choice items (``mipo.tasks.user_file``)

Each registers itself in ``TASKS`` (``mipo.tasks.base``); ``load_task(name)`` looks names up there.
``mipo.tasks.export`` writes a task's train prompts for ``mipo pairs``. The shared types live in
``mipo.tasks.base`` so that task modules never import this package's ``__init__``.
"""

from mipo.tasks.base import (
    CONTEXT_MODES,
    TASKS,
    Item,
    Task,
    TaskEntry,
    TaskOptions,
    build_messages,
    load_task,
    package_file,
    register_task,
    response_text,
    split_task_list,
    stable_unit,
    task_list_help,
)

__all__ = [
    "CONTEXT_MODES",
    "TASKS",
    "Item",
    "Task",
    "TaskEntry",
    "TaskOptions",
    "build_messages",
    "load_task",
    "package_file",
    "register_task",
    "response_text",
    "split_task_list",
    "stable_unit",
    "task_list_help",
]
