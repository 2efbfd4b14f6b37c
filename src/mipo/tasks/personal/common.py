"""What the personalization datasets share: where a dataset comes from, reading its tables, the user split.

A dataset is read from its Hugging Face Hub id (the default), another Hub id (a mirror), or a local folder
laid out as the Hub repository has it (``huggingface-cli download --repo-type dataset ID --local-dir DIR``)
or saved with ``datasets.save_to_disk``. Both go through ``datasets.load_dataset(SOURCE, ...)``: a local
folder stands where the Hub id would, so the tests exercise the Hub's code path. The source is, first to
last: the text after the task's colon (``prism:/data/prism``), the environment variable
``MIPO_<NAME>`` (``MIPO_PRISM=/data/prism``), the dataset's Hub id.

Each dataset maps its rows to prompt records ``{id, prompt, context, meta}`` with ``meta["user"]`` naming
the user whose context it is. Users (not rows) are split into train and test by a hash of their id, so a
user whose context a model trained on is never evaluated, and the split does not move when rows are added.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo.core.errors import ConfigError, MipoError
from mipo.prompts.records import PROMPT_SOURCES
from mipo.tasks.base import Item, Task, TaskOptions, register_task, stable_unit

TEST_SHARE = 0.5  # share of users held out for evaluation (as prefs holds out questions)
SPLITS = ("train", "test", "all")
METRIC = "unscored: no code checker; compare replies with the LLM judge, PMI or context PMI"


@dataclass(frozen=True)
class PersonalDataset:
    """One dataset: its name (the task's), default Hub id, and ``records(source)`` -> every prompt record."""

    name: str
    hub_id: str
    summary: str
    records: Callable[[str], list[dict[str, Any]]]

    @property
    def env_var(self) -> str:
        return "MIPO_" + self.name.upper().replace("-", "_")


def resolve_source(dataset: PersonalDataset, argument: str | None) -> str:
    """The folder or Hub id to read: the task's argument, else ``MIPO_<NAME>``, else the Hub id."""
    source = argument or os.environ.get(dataset.env_var) or dataset.hub_id
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{dataset.name}: {source} is a file; give the dataset's folder or a Hub id")
        return str(path)
    parts = source.split("/")
    if len(parts) != 2 or not all(parts) or source.startswith((".", "~")):
        raise ConfigError(f"{dataset.name}: {source} not found (give a local folder or a Hub id OWNER/NAME)")
    return source


def load_table(
    dataset: PersonalDataset,
    source: str,
    *,
    data_file: str | None = None,
    saved_name: str | None = None,
    splits: tuple[str, ...] = ("train",),
    columns: Iterable[str] | None = None,
    required: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """The rows of one table of ``source``: ``data_file`` (a file of the repository, ``survey.jsonl``) or
    the repository's default configuration; a ``save_to_disk`` folder (``saved_name`` its subfolder).
    Only ``columns`` are kept (those present); a missing ``required`` column is a one-line error."""
    import datasets

    path = Path(source)
    saved = path / saved_name if saved_name and (path / saved_name).is_dir() else path
    if path.is_dir() and _is_saved(saved):
        data = datasets.load_from_disk(str(saved))
    else:
        try:
            data = datasets.load_dataset(source, data_files=data_file)
        except Exception as e:  # offline, unknown id, missing file...: one line naming the dataset
            raise _load_error(dataset, source, data_file, e) from None
    table = _pick_split(dataset, source, data, splits)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        what = f"{source} ({data_file})" if data_file else source
        raise MipoError(
            f"{dataset.name}: {what} has no column {', '.join(missing)} "
            f"(columns: {', '.join(table.column_names)}); see docs/datasets.md for the schema mipo reads"
        )
    if columns is not None:
        table = table.select_columns([c for c in columns if c in table.column_names])
    yield from table


def _is_saved(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _pick_split(dataset: PersonalDataset, source: str, data: Any, preferred: tuple[str, ...]) -> Any:
    import datasets

    if not isinstance(data, datasets.DatasetDict):
        return data
    for name in preferred:
        if name in data:
            return data[name]
    if len(data) == 1:
        return next(iter(data.values()))
    raise MipoError(
        f"{dataset.name}: {source} has the splits {', '.join(data)}; expected one of {', '.join(preferred)}"
    )


def _load_error(dataset: PersonalDataset, source: str, data_file: str | None, error: Exception) -> MipoError:
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    what = f"{source} ({data_file})" if data_file else source
    if Path(source).is_dir():
        return MipoError(f"{dataset.name}: cannot read the local copy {what}: {reason}")
    return MipoError(
        f"{dataset.name}: cannot load {what} from the Hugging Face Hub ({reason}); it needs the network "
        f"once (then the Hub cache), or a local copy: {dataset.env_var}=FOLDER or --prompts {dataset.name}:FOLDER"
    )


def text(value: Any) -> str | None:
    """A cell as stripped text, or None for an empty or missing one."""
    if value is None or (isinstance(value, float) and value != value):  # NaN from a CSV
        return None
    value = str(value).strip()
    return value or None


def split_records(
    dataset: PersonalDataset, records: list[dict[str, Any]], split: str
) -> list[dict[str, Any]]:
    """The records of ``split`` (``train``, ``test`` or ``all``), by a hash of the user, in a hashed order
    (so ``--limit N`` takes N records spread over many users, not one user's N conversations)."""
    if split not in SPLITS:
        raise ConfigError(f"{dataset.name}: unknown split {split!r}; choose {', '.join(SPLITS)}")

    def is_test(record: dict[str, Any]) -> bool:
        return stable_unit(f"{dataset.name}-split:{record['meta']['user']}") < TEST_SHARE

    kept = [r for r in records if split == "all" or is_test(r) == (split == "test")]
    return sorted(kept, key=lambda r: stable_unit(f"{dataset.name}-order:{r['id']}"))


def prompt_records(dataset: PersonalDataset, argument: str | None, split: str) -> list[dict[str, Any]]:
    """Prompt records ``{id, prompt, context, meta}`` of one split of ``dataset``."""
    source = resolve_source(dataset, argument)
    found = split_records(dataset, dataset.records(source), split)
    if not found:
        raise MipoError(f"{dataset.name}: {source} has no usable records in the {split} split")
    return found


def task(dataset: PersonalDataset, argument: str | None = None) -> Task:
    """The test users' records as evaluation items, with no scorer (``score`` is None)."""
    records = prompt_records(dataset, argument, "test")
    items = [Item(r["id"], r["prompt"], r["context"], meta=r["meta"]) for r in records]
    source = resolve_source(dataset, argument)
    return Task(dataset.name, "generate", items, None, METRIC, source)


def register(dataset: PersonalDataset) -> PersonalDataset:
    """Register ``dataset`` as an evaluation task (test users), a task with train prompts for
    ``mipo.tasks.export`` (train users) and a prompt source for ``--prompts NAME[:SOURCE]``."""

    def build(options: TaskOptions) -> Task:
        return task(dataset, options.argument)

    def train_prompts(config) -> list[dict[str, Any]]:
        argument = config.task.partition(":")[2] or None
        return prompt_records(dataset, argument, "train")[: config.limit]

    register_task(
        dataset.name, dataset.summary, argument="SOURCE", argument_optional=True, train_prompts=train_prompts
    )(build)
    PROMPT_SOURCES.register(dataset.name, lambda argument, split: prompt_records(dataset, argument, split))
    return dataset
