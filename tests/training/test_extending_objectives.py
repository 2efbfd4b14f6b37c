"""A training objective added from outside mipo (as docs/extending/objectives.md shows) runs through the CLI."""

from __future__ import annotations

import json

import pytest
from test_training import FAST, rows, write_pairs


@pytest.fixture()
def orpo():
    """The docs' example: ORPO (TRL's, reference-free), registered by code that is not mipo's."""
    from mipo.training.objectives import OBJECTIVES, Objective

    def pairs_as_they_are(pairs):
        return pairs  # ORPO reads prompt/chosen/rejected as DPO does

    OBJECTIVES.register(
        "orpo",
        Objective(
            config_class="trl.experimental.orpo:ORPOConfig",
            trainer_class="trl.experimental.orpo:ORPOTrainer",
            prepare_rows=pairs_as_they_are,
            description="ORPO: odds-ratio preference optimization, no reference model",
            defaults={"train_sampling_strategy": "random"},  # its rows carry no length column
        ),
    )
    yield
    OBJECTIVES.unregister("orpo")


def test_a_registered_objective_trains_through_the_cli(tmp_path, tiny_model_dir, cli, orpo):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    out = tmp_path / "orpo"
    code, stdout, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", "orpo",
        "--max-steps", "2", "--beta", "0.2", *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert "2 steps" in stdout
    used = json.loads((out / "train_config.json").read_text())
    assert used["orpo_config"]["beta"] == 0.2 and used["train_config"]["objective"] == "orpo"
    metrics = rows(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2] and metrics[0]["loss"] > 0
    assert (out / "adapter_model.safetensors").is_file()


def test_an_unknown_objective_lists_the_registered_ones(tmp_path, tiny_model_dir, cli, orpo):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", tmp_path / "o", "--objective", "orpp"
    )
    assert code == 2
    assert "unknown training objective 'orpp'; known: cca, dpo, guidance, infonce, orpo, sami, sft" in err
