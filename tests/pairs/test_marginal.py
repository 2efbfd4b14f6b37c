"""``mipo pairs --strategy marginal``: x' is one neutral user turn shared by every prompt."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

from mipo.pairs.strategies import STRATEGIES
from mipo.prompts.records import PromptRecord


def test_marginal_negative_drops_question_context_and_system():
    records = [
        PromptRecord(id="a", prompt="What is 2+2?", context="I am a child.", system="Be kind."),
        PromptRecord(id="b", prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]),
    ]
    negatives = STRATEGIES.get("marginal")(records, random.Random(0), 2, SimpleNamespace())
    assert [len(n) for n in negatives] == [2, 2]
    for negative in (n for per_record in negatives for n in per_record):
        assert negative.prompt == [{"role": "user", "content": ""}]
        assert negative.context is None and negative.system is None


def test_marginal_prompt_text_comes_from_the_settings():
    records = [PromptRecord(id="a", prompt="What is 2+2?", context="I am a child.")]
    settings = SimpleNamespace(marginal_prompt="Hello.")
    [[negative]] = STRATEGIES.get("marginal")(records, random.Random(0), 1, settings)
    assert negative.prompt == [{"role": "user", "content": "Hello."}]


def test_marginal_pairs_through_the_cli_share_one_rejected_reply(tmp_path, tiny_model_dir, cli):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "prompt": f"Question {i}: name a colour.", "context": f"I am user {i}."}
            )
            + "\n"
            for i in range(4)
        )
    )
    out = tmp_path / "pairs.jsonl"
    code, stdout, err = cli(
        "pairs", "--model", tiny_model_dir, "--prompts", prompts, "--out", out, "--strategy", "marginal",
        "--max-new-tokens", "6", "--temperature", "1.0",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and "wrote 4 pairs from 4 prompts" in stdout
    assert {r["strategy"] for r in rows} == {"marginal"}
    assert all(r["negative_prompt"] == [{"role": "user", "content": ""}] for r in rows)
    assert all(r["prompt"][0] == {"role": "system", "content": f"I am user {r['id'][1:]}."} for r in rows)
    # one conversation, seeded by its tokens: the same rejected reply in every pair
    assert len({r["rejected"][0]["content"] for r in rows}) == 1
    assert len({r["chosen"][0]["content"] for r in rows}) > 1


def test_the_neutral_turn_is_generated_once_for_all_prompts(tmp_path, tiny_model_dir, monkeypatch):
    import mipo.engine.generation as generation
    from mipo.pairs.build import run_pairs
    from mipo.pairs.config import PairsConfig

    generated = []
    real = generation.generate_responses

    def counting(model, tokenizer, conversations, **kwargs):
        generated.extend(conversations)
        return real(model, tokenizer, conversations, **kwargs)

    monkeypatch.setattr(generation, "generate_responses", counting)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(4))
    )
    config = PairsConfig(
        model=str(tiny_model_dir), prompts=str(prompts), out=str(tmp_path / "pairs.jsonl"), strategy="marginal",
        max_new_tokens=4, progress=False, chunk_size=2,
    )  # fmt: skip
    assert run_pairs(config).pairs == 4
    assert generated.count([{"role": "user", "content": ""}]) == 1 and len(generated) == 5
