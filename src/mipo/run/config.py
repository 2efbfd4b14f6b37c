"""``mipo run``'s config: one YAML file with a section per stage, ``KEY=VALUE`` overrides, unknown keys refused."""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.config import load_yaml, option, require
from mipo.core.errors import ConfigError

if TYPE_CHECKING:
    pass


STAGES = ("prompts", "pairs", "train", "eval", "report")


@dataclass
class RunConfig:
    run_dir: str = option("runs/mipo", "folder that holds every stage's output")
    model: str = option("smollm2-135m", "the base model: a built-in name, a folder or a Hub id")
    seed: int = option(0, "seed for every stage that samples")
    dtype: str = option(
        "auto",
        "the dtype of every stage that loads a model (a stage's own `dtype` wins): auto (bf16 where the GPU "
        "or the CPU computes it in hardware), float32 or bfloat16",
    )
    rounds: int = option(
        1,
        "MIPO rounds: round r builds its pairs with round r-1's model and trains from it (the reference is "
        "round r-1's model); rounds after the first go in pairs-rN/ and train-rN/; eval runs on the last",
    )
    prompts: dict = option({}, "where the prompts come from: {task: prefs|gsm8k, ...} or {file: PATH, ...}")
    pairs: dict = option({}, "settings of `mipo pairs` (PairsConfig fields)")
    train: dict = option({}, "settings of `mipo train` (TrainConfig fields)")
    eval: list = option([], "one mapping per evaluation (EvalConfig fields; `task` required)")
    report: dict = option({}, "settings of the report: {examples: N}")
    title: str = option("", "a title for the report")
    reuse_stages: bool = option(
        True,
        "copy a finished stage with the same key from a sibling run folder (same parent) instead of "
        "rerunning it: runs that differ only in training settings share their prompts and pairs",
    )

    def __post_init__(self) -> None:
        problems = []
        if not self.prompts:
            problems.append("'prompts' is empty: give {task: prefs} or {file: PATH}")
        for i, e in enumerate(self.eval):
            if not isinstance(e, dict) or "task" not in e:
                problems.append(f"eval[{i}] needs a 'task'")
        from mipo.engine.dtypes import dtype_problems

        problems += [p.replace("--dtype", "'dtype'", 1) for p in dtype_problems(self.dtype, None)]
        if not isinstance(self.rounds, int) or self.rounds < 1:
            problems.append(f"'rounds' must be a whole number of at least 1, got {self.rounds!r}")
        require(problems)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``train.learning_rate=1e-4`` or ``eval.0.limit=20``: set one key, YAML-typed."""
    values = copy.deepcopy(values)
    for item in overrides:
        keys, raw = _split_override(item)
        node = values
        for k in keys[:-1]:
            node = _child(node, k, item)
        last = keys[-1]
        if isinstance(node, list):
            node[_list_index(node, last, item)] = _parse_value(raw)
        else:
            node[last] = _parse_value(raw)
    return values


def _split_override(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)")
    dotted, raw = item.split("=", 1)
    return dotted.split("."), raw


def _list_index(node: list, key: str, item: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override '{item}': no list item {key}")
    return int(key)


def _child(node: dict | list, key: str, item: str) -> dict | list:
    """The mapping or list under ``key`` (a new mapping where there is none yet)."""
    child = node[_list_index(node, key, item)] if isinstance(node, list) else node.setdefault(key, {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override '{item}': '{key}' is {child!r}, not a mapping of settings")
    return child


def _parse_value(raw: str) -> Any:
    """YAML-typed, except that ``1e-4`` is a number (YAML 1.1 wants ``1.0e-4``)."""
    import yaml

    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def section_settings(section: str) -> set[str]:
    """The keys a section of the run config accepts: the fields of the config it becomes."""
    from mipo.evaluation.settings import EvalConfig
    from mipo.pairs.config import PairsConfig
    from mipo.report.writer import ReportConfig
    from mipo.tasks.export import PromptExportConfig
    from mipo.training.config import TrainConfig

    classes = {
        "prompts": (PromptExportConfig, {"file"}),  # a built-in task's export settings, or the user's file
        "pairs": (PairsConfig, set()),
        "train": (TrainConfig, set()),
        "eval": (EvalConfig, {"name"}),  # name: the eval's folder under eval/ (default: the task)
        "report": (ReportConfig, set()),
    }
    cls, extra = classes[section]
    names = set(extra)
    for f in dataclasses.fields(cls):
        # a field's short aliases (``aliases=("--epochs",)``) are keys too
        names |= {f.name, *(a.lstrip("-").replace("-", "_") for a in f.metadata.get("aliases", ()))}
    return names


def check_override_keys(overrides: list[str]) -> None:
    """Refuse an override that sets an unknown key, naming the override (the YAML file is not to blame)."""
    top_level = {f.name for f in dataclasses.fields(RunConfig)}
    for item in overrides:
        keys, _ = _split_override(item)
        known, key = top_level, keys[0]
        if keys[0] in ("prompts", "pairs", "train", "report") and len(keys) > 1:
            known, key = section_settings(keys[0]), keys[1]
        elif keys[0] == "eval" and len(keys) > 2:
            known, key = section_settings("eval"), keys[2]
        elif keys[0] in top_level and keys[0] != "eval" and len(keys) > 1:
            raise ConfigError(f"override '{item}': '{keys[0]}' is one value, not a mapping of settings")
        if key.replace("-", "_") not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"override '{item}': unknown key '{key}'{hint}")


def load_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    from mipo.core.config import from_dict

    check_override_keys(list(overrides))
    return from_dict(RunConfig, apply_overrides(load_yaml(path), list(overrides)), source=str(path))


def as_config_keys(message: str, config_class: type, section: str) -> str:
    """A command's error as a `mipo run` user reads it: its flags (``--limit``) named as the config keys
    that set them (``pairs.limit``), under the config section it came from."""
    import dataclasses
    import re

    fields = {f.name for f in dataclasses.fields(config_class)}

    def key(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f"{section}.{name}" if name in fields else match.group(0)

    message = re.sub(r"(?<![\w-])--([A-Za-z][\w-]*)", key, message)
    return message if message.startswith(f"{section}") else f"{section}: {message}"
