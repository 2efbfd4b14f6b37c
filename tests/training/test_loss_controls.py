"""TRL's own controls for the two suspected causes of DPO's generic shift on MIPO pairs (issue 25): the unbounded
reward gap (``--loss_type ipo``; ``--label_smoothing`` with the losses that read it) and length
(``--loss_type sigmoid_norm``; ``--ld_alpha``). mipo adds no code for them: each is a DPOConfig field under
TRL's name, from a flag or a YAML key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

CONTROLS = [
    (["--loss_type", "ipo"], "loss_type: ipo\n", {"loss_type": ["ipo"]}),
    (
        ["--loss_type", "robust", "--label_smoothing", "0.1"],
        "loss_type: robust\nlabel_smoothing: 0.1\n",
        {"loss_type": ["robust"], "label_smoothing": 0.1},
    ),
    (
        ["--loss_type", "exo_pair", "--label_smoothing", "0.001"],
        "dpo: {loss_type: exo_pair, label_smoothing: 0.001}\n",
        {"loss_type": ["exo_pair"], "label_smoothing": 0.001},
    ),
    (["--loss_type", "sigmoid_norm"], "loss_type: sigmoid_norm\n", {"loss_type": ["sigmoid_norm"]}),
    (["--ld_alpha", "0.5"], "ld_alpha: 0.5\n", {"loss_type": ["sigmoid"], "ld_alpha": 0.5}),
]


def dpo_config_from(tmp_path: Path, flags: list[str], yaml_text: str | None = None):
    """The DPOConfig ``mipo train`` would build from these flags (and YAML file), without training."""
    import argparse

    from mipo.core.config import resolve
    from mipo.training.command import configure_parser
    from mipo.training.config import TrainConfig, trl_settings

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    yaml_path = None
    if yaml_text is not None:
        yaml_path = tmp_path / "train.yaml"
        yaml_path.write_text(yaml_text)
    args = parser.parse_args(["--pairs", "p.jsonl", "--out", str(tmp_path / "run"), *flags])
    config = resolve(TrainConfig, args, yaml_path=yaml_path)
    objective = config.training_objective()
    return objective.config()(**trl_settings(config, objective, tmp_path / "work", "cpu"))


@pytest.mark.parametrize(("flags", "yaml_text", "expected"), CONTROLS)
def test_each_control_reaches_the_dpo_config_from_a_flag_and_a_yaml_key(tmp_path, flags, yaml_text, expected):
    for dpo_config in (dpo_config_from(tmp_path, flags), dpo_config_from(tmp_path, [], yaml_text)):
        for name, value in expected.items():
            assert getattr(dpo_config, name) == value, (name, flags)
    untouched = dpo_config_from(tmp_path, [])
    assert (untouched.loss_type, untouched.label_smoothing, untouched.ld_alpha) == (["sigmoid"], 0.0, None)


def write_pairs(path: Path, count: int = 4) -> Path:
    rows = [
        {
            "prompt": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"Q{i}?"},
            ],
            "chosen": [{"role": "assistant", "content": f"A short answer {i}."}],
            "rejected": [
                {"role": "assistant", "content": f"A much longer answer number {i}, with more words."}
            ],
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# The loss at step 1, where LoRA's model is the reference (every log-ratio 0): IPO's (0 - 1/(2 beta))^2 = 25 at
# beta 0.1; the others are -log sigmoid(0) = log 2 (robust: (0.9 + (-0.1)) log 2 / (1 - 0.2) = log 2).
@pytest.mark.parametrize(
    ("flags", "first_loss"),
    [
        (["--loss_type", "ipo"], 25.0),
        (["--loss_type", "robust", "--label_smoothing", "0.1"], math.log(2)),
        (["--loss_type", "sigmoid_norm"], math.log(2)),
        (["--ld_alpha", "0.5"], math.log(2)),
    ],
)
def test_each_control_trains_and_its_first_loss_is_the_hand_computed_one(
    tmp_path, tiny_model_dir, cli, flags, first_loss
):
    out = tmp_path / "run"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", write_pairs(tmp_path / "pairs.jsonl"), "--out", out,
        "--max_steps", "1", "--batch-size", "4", "--max-length", "128", "--no-ref-cache", *flags,
    )  # fmt: skip
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["loss"] == pytest.approx(first_loss, rel=1e-4)
    used = json.loads((out / "train_config.json").read_text())["dpo_config"]
    assert used["loss_type"] == [flags[1]] if flags[0] == "--loss_type" else used["ld_alpha"] == 0.5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--label_smoothing", "0.1"], "--label_smoothing 0.1 changes nothing with --loss_type sigmoid"),
        (["--loss_type", "ipo", "--label_smoothing", "0.1"], "changes nothing with --loss_type ipo"),
        (
            ["--loss_type", "robust", "--label_smoothing", "0.5"],
            "--label_smoothing must be in [0, 0.5), got 0.5",
        ),
        (["--ld_alpha", "1.5"], "--ld_alpha must be in [0, 1], got 1.5"),
    ],
)
def test_bad_controls_are_one_line_errors_before_anything_is_written(tmp_path, cli, flags, message):
    out = tmp_path / "run"
    code, _, err = cli("train", "--pairs", write_pairs(tmp_path / "pairs.jsonl"), "--out", out, *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_the_length_controls_change_what_is_learned(tmp_path, tiny_model_dir, cli):
    """mipo's one-copy-of-the-prompt forward hands TRL its usual per-token log-probs and masks, so TRL's
    length controls act on them: after one step at a high rate, the second step's loss differs from DPO's."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")

    def second_loss(*flags: str) -> float:
        out = tmp_path / "-".join(["run", *flags]).replace("--", "")
        code, _, err = cli(
            "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--max_steps", "2",
            "--batch-size", "4", "--max-length", "128", "--lr", "1e-2", "--no-ref-cache", *flags,
        )  # fmt: skip
        assert code == 0, err
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1]["loss"]

    plain = second_loss()
    assert second_loss("--ld_alpha", "0") != pytest.approx(plain, rel=1e-3)
    assert second_loss("--loss_type", "sigmoid_norm") != pytest.approx(plain, rel=1e-3)
