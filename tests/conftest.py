"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from mipo.engine.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer, hidden-64 Llama with SmolLM2's tokenizer and chat template, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def cli(capsys):
    """Run ``mipo ARGS`` in-process; returns ``(exit_code, stdout, stderr)``."""
    from mipo.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def fp32_unless_asked():
    """``--dtype auto`` picks fp32 in every test, whatever bf16 unit this CPU has, so the suite computes the
    same on every machine; the bf16 tests ask for ``--dtype bfloat16`` (tests/engine/test_dtypes.py). Not
    through ``monkeypatch``, whose ``undo()`` in a test would lift it."""
    from unittest import mock

    with mock.patch("mipo.engine.dtypes.native_bf16_unit", lambda: None):
        yield


@pytest.fixture()
def stub_vllm(monkeypatch):
    """A stub ``vllm`` package in ``sys.modules`` (tests/vllm_stub.py); returns what it recorded."""
    from vllm_stub import install

    return install(monkeypatch)
