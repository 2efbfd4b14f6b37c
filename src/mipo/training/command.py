"""``mipo train``: the command line (mipo's flags, then every ``DPOConfig`` field under TRL's own name)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mipo.core.config import (
    add_config_arguments,
    resolve,
)
from mipo.formats.run_folder import SUMMARY
from mipo.training.config import DEVICE_DEFAULTS_TEXT, TRL_DEFAULTS, TrainConfig
from mipo.training.trainer import train


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="settings file (keys as below, TRL's fields included; or a dpo: mapping)",
    )
    add_config_arguments(parser, TrainConfig)
    add_trl_arguments(parser)
    parser.usage = "%(prog)s --pairs PAIRS --out OUT [--model MODEL] [options] [TRL fields]"


def add_trl_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of each objective's TRL config, under its TRL name, in a group per config class."""
    import typing

    from mipo.training import trl_fields
    from mipo.training.objectives import OBJECTIVES

    taken = {f.name for f in dataclasses.fields(TrainConfig)} | set(trl_fields.NOT_SETTABLE)
    for name in sorted(OBJECTIVES.names(), key=lambda n: n != "dpo"):
        objective = OBJECTIVES.get(name)
        config_class = objective.config()
        hints, fields = trl_fields.annotations(config_class), trl_fields.fields(config_class)
        new = [f for f in fields if f not in taken]
        if not new:
            continue
        from_trl = config_class.__module__.split(".")[0] == "trl"
        group = parser.add_argument_group(
            f"{'TRL ' if from_trl else ''}{config_class.__name__} fields (--objective {name})",
            "TRL's own names, meanings and types (each is also a YAML key); mipo's defaults where it has its own"
            if from_trl
            else "this objective's settings (each is also a YAML key; transformers' TrainingArguments fields as above)",
        )
        mipo_defaults = {**TRL_DEFAULTS, **objective.defaults}
        for field_name in new:
            f, annotation = fields[field_name], hints[field_name]
            is_bool = annotation is bool or bool in typing.get_args(annotation)
            value = mipo_defaults.get(field_name, trl_fields.default(f))
            shown = DEVICE_DEFAULTS_TEXT.get(field_name) or (None if value is None else repr(value))
            text = trl_fields.first_sentence(f.metadata.get("help", ""))
            text += f" (default: {shown})" if shown else ""
            spelled = dict(
                dest=f"dpo.{field_name}",
                type=trl_fields.flag_parser(annotation),
                nargs="?" if is_bool else None,  # --flag alone means true, as with `trl dpo`
                const=True if is_bool else None,
                metavar=field_name.upper(),
            )
            group.add_argument(f"--{field_name}", help=text.replace("%", "%%"), **spelled)
            dashed = f"--{field_name.replace('_', '-')}"  # as mipo's own flags (--cad-alpha), not in --help
            if "_" in field_name and dashed not in parser._option_string_actions:
                group.add_argument(dashed, help=argparse.SUPPRESS, **spelled)
        taken |= set(new)


def main(args: argparse.Namespace) -> int:
    config = resolve(TrainConfig, args, yaml_path=args.config)
    out = train(config)
    from accelerate import PartialState

    summary = json.loads((out / SUMMARY).read_text()) if (out / SUMMARY).is_file() else {}
    if summary and PartialState().is_main_process:
        print(
            f"{out}: {summary['steps']} steps in {summary['seconds']} s, {summary['tokens_per_second']} tokens/s, "
            f"final loss {summary['final_loss']}, margins {summary['final_margins']}"
        )
    return 0
