"""Judge models for tests: a real model with known verdicts, shared by test_judges and test_eval_judge."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", name="bigram_judge_dir")
def bigram_judge_fixture(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer Llama whose weights are set by hand so that it answers every judge prompt "[[A]]":
    attention and MLP outputs are zeroed (each position sees only its own token), and the output layer maps
    '\\n' -> '[[', '[[' -> A (logit 16) / B (15) / C (14), a letter -> ']]', ']]' -> end of turn.
    A real model that always picks the first reply, with known verdict probabilities."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["[[", "A", "B", "C", "]]", "<|im_end|>"]}
    newline = tok.encode("\n", add_special_tokens=False)[0]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        head = torch.zeros_like(model.lm_head.weight)
        # RMSNorm turns an embedding e into 8 e/|e| (hidden size 64): the logit of row u is 8 u.e/|e|.
        links = [(newline, ids["[["], 2.0), (ids["[["], ids["A"], 2.0), (ids["[["], ids["B"], 1.875)]
        links += [(ids["[["], ids["C"], 1.75)] + [(ids[x], ids["]]"], 2.0) for x in "ABC"]
        links += [(ids["]]"], ids["<|im_end|>"], 2.0)]
        for source, target, weight in links:
            head[target] += weight * embeddings[source] / embeddings[source].norm()
        model.lm_head.weight.copy_(head)
    folder = tmp_path_factory.mktemp("bigram-judge")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
