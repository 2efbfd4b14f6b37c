"""``mipo.engine.kv_cache`` subclasses transformers' ``DynamicLayer``: these tests fail loudly when the installed
transformers changes what that subclass relies on, before generation turns slow or wrong."""

from __future__ import annotations

import inspect

import pytest


def test_dynamic_layer_still_has_the_interface_buffered_layer_overrides():
    from transformers import DynamicCache, LlamaConfig
    from transformers.cache_utils import DynamicLayer

    def params(name):
        return list(inspect.signature(getattr(DynamicLayer, name)).parameters)

    assert params("lazy_initialization")[:3] == ["self", "key_states", "value_states"]
    assert params("update")[:3] == ["self", "key_states", "value_states"]
    assert params("batch_select_indices") == ["self", "indices"]
    config = LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2)
    cache = DynamicCache(config=config)
    assert [type(layer) for layer in cache.layers] == [DynamicLayer] * 3  # one per full-attention layer
    import torch

    layer = DynamicLayer()
    keys, values = layer.update(torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    assert (
        layer.is_initialized and layer.keys is keys and layer.values is values and keys.shape == (1, 2, 3, 4)
    )


def test_decoding_with_the_buffered_cache_gives_transformers_logits(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from mipo.engine.kv_cache import buffered_layer_class, preallocated_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]])

    def decode(cache, drop_row_after=None):
        logits = []
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            step = out.logits[:, -1].argmax(-1, keepdim=True)
            logits.append(out.logits[:, -1])
            for n in range(3):
                if n == drop_row_after:
                    keep = torch.tensor([0, 2])
                    cache.batch_select_indices(keep)
                    step = step[keep]
                out = model(input_ids=step, past_key_values=cache, use_cache=True)
                step = out.logits[:, -1].argmax(-1, keepdim=True)
                logits.append(out.logits[:, -1])
        return logits

    buffered = preallocated_cache(model, capacity=4 + 3)
    assert all(type(layer) is buffered_layer_class() for layer in buffered.layers)
    for drop in (None, 1):
        ours, theirs = (
            decode(preallocated_cache(model, 7), drop),
            decode(DynamicCache(config=model.config), drop),
        )
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="cache capacity 5 exceeded"):
        decode(preallocated_cache(model, 5))
