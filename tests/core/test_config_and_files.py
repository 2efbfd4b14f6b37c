import argparse
import json
from dataclasses import dataclass

import pytest

from mipo.core.config import add_config_arguments, from_dict, option, require, resolve
from mipo.core.errors import ConfigError, InputError, OutputExistsError
from mipo.core.files import RowWriter, read_jsonl


@dataclass
class DemoConfig:
    model: str = option("smollm2-135m", "model name")
    beta: float = option(0.1, "DPO beta")
    epochs: int = option(1, "epochs")
    lora: bool = option(True, "train a LoRA adapter")
    seeds: list = option([1], "seeds")

    def __post_init__(self):
        require([f"beta must be > 0, got {self.beta}"] if self.beta <= 0 else [])


def test_defaults_then_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("beta: 0.5\nepochs: 3\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DemoConfig)
    args = parser.parse_args(["--epochs", "2", "--no-lora", "--seeds", "1,2,3"])
    c = resolve(DemoConfig, args, yaml_path=cfg)
    assert (c.model, c.beta, c.epochs, c.lora, c.seeds) == ("smollm2-135m", 0.5, 2, False, ["1", "2", "3"])


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'betta'"):
        from_dict(DemoConfig, {"betta": 1})
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        from_dict(DemoConfig, {"epochs": "many"})
    with pytest.raises(ConfigError, match="beta must be > 0"):
        from_dict(DemoConfig, {"beta": -1})


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"x.jsonl:2: malformed JSON"):
        list(read_jsonl(f))
    f.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        list(read_jsonl(f))


def test_row_writer_resumes_without_losing_or_repeating(tmp_path):
    out = tmp_path / "rows.jsonl"
    w = RowWriter(out)
    w.write({"i": 0})
    w.write({"i": 1})
    w.abort()
    with open(w.partial, "a") as f:
        f.write('{"i": 2')  # a row cut by a kill
    with pytest.raises(Exception, match="--resume"):
        RowWriter(out)
    w = RowWriter(out, resume=True)
    assert [r["i"] for r in w.existing] == [0, 1]
    w.write({"i": 2})
    w.close()
    assert [json.loads(x)["i"] for x in out.read_text().splitlines()] == [0, 1, 2]
    with pytest.raises(OutputExistsError):
        RowWriter(out)
    RowWriter(out, overwrite=True).close()
    assert out.read_text() == ""


def test_row_writer_parquet(tmp_path):
    import pyarrow.parquet as pq

    with RowWriter(tmp_path / "rows.parquet") as w:
        w.write({"i": 1, "s": "x"})
    assert pq.read_table(tmp_path / "rows.parquet").to_pylist() == [{"i": 1, "s": "x"}]


@dataclass
class FlagsConfig:
    out: str = option(None, "output file", required=True)
    overwrite: bool = option(False, "replace the output", negatable=False)
    progress: bool = option(True, "show progress")
    batch_size: int = option(8, "rows per batch", underscore=True, aliases=("--bs",))
    extra: dict = option({}, "anything a library takes", rest=lambda key: key.startswith("lib_"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, FlagsConfig)
    return parser


def test_flags_required_plain_boolean_underscore_and_alias_spellings():
    parser = _parser()
    text = parser.format_help()
    assert "output file (required)" in text and "(default: '')" not in text and "default: None" not in text
    assert "--no-overwrite" not in text and "--no-progress" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-overwrite"])
    for flag in ("--batch_size", "--batch-size", "--bs"):
        assert resolve(FlagsConfig, parser.parse_args(["--out", "x", flag, "2"])).batch_size == 2
    assert resolve(FlagsConfig, parser.parse_args(["--out", "x", "--overwrite"])).overwrite is True


def test_yaml_aliases_and_the_rest_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("out: o\nbs: 4\nlib_alpha: 1\nextra: {lib_beta: 2}\n")
    parser = _parser()
    parser.add_argument("--lib_gamma", dest="extra.lib_gamma", type=int)
    c = resolve(FlagsConfig, parser.parse_args(["--lib_gamma", "3", "--extra", "lib_delta=4"]), yaml_path=cfg)
    assert c.batch_size == 4
    assert c.extra == {"lib_alpha": 1, "lib_beta": 2, "lib_gamma": 3, "lib_delta": 4}
    with pytest.raises(ConfigError, match="unknown key 'other'"):
        from_dict(FlagsConfig, {"out": "o", "other": 1})
    with pytest.raises(ConfigError, match="'bs' is set twice"):
        from_dict(FlagsConfig, {"out": "o", "batch_size": 1, "bs": 2})
    with pytest.raises(ConfigError, match="lib_alpha set both at the top level and under extra"):
        from_dict(FlagsConfig, {"out": "o", "lib_alpha": 1, "extra": {"lib_alpha": 2}})


def test_a_yaml_list_for_a_comma_separated_setting_is_joined_not_stringified():
    # `train: {loss_type: [sigmoid, sft]}` in a `mipo run` config: the same as --loss_type sigmoid,sft
    # (it used to reach TRL as "['sigmoid'" and "'sft']")
    from mipo.training.config import TrainConfig

    config = from_dict(TrainConfig, {"pairs": "p.jsonl", "out": "o", "loss_type": ["sigmoid", "sft"]})
    assert config.loss_type == "sigmoid,sft"
    with pytest.raises(ConfigError, match="'loss_type' must be str"):
        from_dict(TrainConfig, {"pairs": "p.jsonl", "out": "o", "loss_type": {"sigmoid": 1}})
    with pytest.raises(ConfigError, match="'loss_type' must be str"):
        from_dict(TrainConfig, {"pairs": "p.jsonl", "out": "o", "loss_type": [["sigmoid"]]})
