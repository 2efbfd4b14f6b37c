"""``pmi``: held-out prompts whose responses are scored by their pointwise mutual information.

The prompts are a prompt-records or pairs file (``--prompts``), or the test items of another task named
there (``prefs`` when none is given; a file of that name wins over the task). The scoring itself is in
``mipo.engine.pmi``; this module only supplies the items.
"""

from __future__ import annotations

from pathlib import Path

from mipo.tasks.base import TASKS, Item, Task, TaskOptions, load_task, register_task

KNOWN_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def items_from_file(path: str | Path) -> list[Item]:
    """Prompt records ``{id?, prompt, context?, system?}`` or pairs rows (``prompt`` as chat messages, with
    ``chosen``/``rejected``, which land in ``meta``), read by ``mipo.prompts.records.load_prompts`` (ids: the ``id``
    field, else the line number)."""
    from mipo.prompts.records import load_prompts

    path = Path(path)
    if path.is_file() and path.suffix.lower() not in KNOWN_SUFFIXES:
        return [Item.from_record(record) for record in _load_as_jsonl(path)]
    return [Item.from_record(record) for record in load_prompts(path)]


def _load_as_jsonl(path: Path):
    """A file without a known suffix (one named like a task, ``gsm8k``) has always been read as JSONL here;
    ``load_prompts`` tells formats by suffix, so it reads the file through a ``.jsonl`` link."""
    import tempfile

    from mipo.core.errors import MipoError
    from mipo.prompts.records import load_prompts

    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / (path.name + ".jsonl")
        link.symlink_to(path.resolve())
        try:
            return load_prompts(link)
        except MipoError as e:
            raise MipoError(str(e).replace(str(link), str(path))) from None


def task(prompts: str | None, *, train_split: float = 0.2, preference_types: list[str] | None = None) -> Task:
    name = prompts or "prefs"
    entry = TASKS.get(name) if name in TASKS and name != "pmi" else None
    if entry is not None and entry.argument is None and not Path(name).exists():
        items = load_task(name, train_split=train_split, preference_types=preference_types).items
        source = f"{name} test items"
    else:
        items, source = items_from_file(name), name
    return Task("pmi", "pmi", items, None, "mean PMI (nats)", source)


@register_task("pmi", "the MIPO objective (pointwise mutual information) on held-out prompts")
def _build(options: TaskOptions) -> Task:
    return task(options.prompts, train_split=options.train_split, preference_types=options.preference_types)


PMI_AGAINST = ("prompts", "context")  # what a reply's likelihood is compared with (``--against``)


def require_contexts(task: Task) -> Task:
    """``--against context`` scores ``log π(y|x,c) − log π(y|x)``: every item needs its user context ``c``."""
    from mipo.core.errors import ConfigError

    missing = [item for item in task.items if not item.context]
    if missing:
        first = missing[0]
        where = f"line {first.line}" if first.line else f"item {first.id!r}"
        raise ConfigError(
            f"pmi --against context: {task.source}: {where} has no 'context' ({len(missing)} of "
            f"{len(task.items)} items lack one); context PMI needs the user's context on every item"
        )
    task.metric = "mean context PMI log π(y|x,c) − log π(y|x) (nats)"
    return task
