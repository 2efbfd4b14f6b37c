"""``mipo pairs --select pmi``: candidates ranked by their PMI against the negative prompts, on the tiny model."""

from __future__ import annotations

import json

import pytest
from test_pairs import config, read_rows, write_prompts


def test_pmi_ranked_rows_carry_scores_and_chosen_has_the_highest(tmp_path, tiny_model_dir):
    from mipo.engine.models import load_model
    from mipo.engine.pmi import pmi_from_logprobs
    from mipo.engine.scoring import sequence_logprobs

    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "pairs.jsonl"
    cfg = config(
        tiny_model_dir,
        prompts,
        out,
        strategy="incomplete",
        select="pmi",
        samples=4,
        rejected="lowest",
        temperature=1.0,
        top_p=1.0,
    )
    from mipo.pairs.build import run_pairs

    run_pairs(cfg)
    rows = read_rows(out)
    assert rows, "no pairs written"
    model, tokenizer = load_model(str(tiny_model_dir))
    for row in rows:
        scores = row["candidate_pmi"]
        assert len(scores) == 4 and row["generation"]["select"] == "pmi"
        assert row["chosen_pmi"] == max(scores) and row["rejected_pmi"] == min(scores)  # --rejected lowest
        # the chosen reply's PMI, recomputed by hand: log π(y|x,c) − log π(y|x) under the base model
        chosen = row["chosen"][0]["content"]
        with_context, without = sequence_logprobs(
            model, tokenizer, [row["prompt"], row["negative_prompt"]], [chosen, chosen]
        )
        assert row["chosen_pmi"] == pytest.approx(pmi_from_logprobs([with_context], [[without]])[0], abs=1e-4)
        assert "system" not in json.dumps(row["negative_prompt"]) or "About me" not in json.dumps(
            row["negative_prompt"]
        )


def test_rejected_negative_takes_the_negative_prompts_reply(tmp_path, tiny_model_dir):
    from mipo.pairs.build import run_pairs

    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    plain = tmp_path / "plain.jsonl"
    run_pairs(config(tiny_model_dir, prompts, plain, strategy="incomplete", temperature=1.0, top_p=1.0))
    out = tmp_path / "pairs.jsonl"
    cfg = config(
        tiny_model_dir,
        prompts,
        out,
        strategy="incomplete",
        select="pmi",  # --rejected negative: the default
        samples=3,
        temperature=1.0,
        top_p=1.0,
    )
    run_pairs(cfg)
    # a negative prompt's first reply is seeded as in a plain run: the same rejected replies
    plain_rejected = {r["id"]: r["rejected"] for r in read_rows(plain)}
    for row in read_rows(out):
        assert row["rejected"] == plain_rejected[row["id"]]
        assert row["chosen_pmi"] == max(row["candidate_pmi"])


def test_select_pmi_with_one_sample_is_a_one_line_error_before_loading(tmp_path, cli, monkeypatch):
    import mipo.engine.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    prompts = write_prompts(tmp_path / "p.jsonl")
    args = ["pairs", "--prompts", prompts, "--out", tmp_path / "o.jsonl", "--select", "pmi", "--samples", "1"]
    code, out, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--samples must be at least 2" in err and "--select pmi" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_select_pmi_resumes_and_a_changed_rejected_setting_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    import mipo.pairs.rows
    from mipo.core.errors import MipoError
    from mipo.pairs.build import run_pairs

    # Like with like: a resumed run decodes and scores in other batches than an uninterrupted one, and a
    # batch's padding can round a near-tied logit of the tiny model the other way (seen with one thread on
    # an AVX-512 CPU); one sequence a forward pass decodes and scores alike in both.
    monkeypatch.setattr(mipo.pairs.rows, "SCORE_BATCH", 1)

    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "pairs.jsonl"
    settings = dict(strategy="random", select="pmi", samples=2, rejected="lowest", temperature=1.0, top_p=1.0)
    settings["batch_size"] = 1
    run_pairs(config(tiny_model_dir, prompts, tmp_path / "whole.jsonl", **settings))
    # an interrupted run: the partial file holds the first rows, with the fingerprint of its settings
    first = config(tiny_model_dir, prompts, out, chunk_size=1, **settings)
    with pytest.raises(KeyboardInterrupt):
        _run_killed_after_first_chunk(first)
    changed = config(tiny_model_dir, prompts, out, resume=True, **{**settings, "rejected": "negative"})
    with pytest.raises(MipoError, match="rejected"):
        run_pairs(changed)
    run_pairs(config(tiny_model_dir, prompts, out, resume=True, chunk_size=1, **settings))
    # the same rows as one uninterrupted run (written in another order: chunk by chunk)
    assert sorted(read_rows(out), key=lambda r: r["id"]) == read_rows(tmp_path / "whole.jsonl")


def _run_killed_after_first_chunk(cfg):
    import mipo.pairs.build

    real = mipo.pairs.build.append_responses
    calls = []

    def kill_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    mipo.pairs.build.append_responses = kill_on_second
    try:
        mipo.pairs.build.run_pairs(cfg)
    finally:
        mipo.pairs.build.append_responses = real
