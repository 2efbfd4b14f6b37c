"""A KV cache that grows inside buffers allocated once, for the ``hf`` decode loop (``mipo.engine.generation``).

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, copying the whole
cache of every layer at every step; ``BufferedLayer`` writes one slot of a buffer sized for the prompt plus
``max_new_tokens`` and hands attention a view of the filled part. It subclasses ``DynamicLayer`` and relies on
its internals as of transformers 5.x: the attributes ``keys``, ``values``, ``is_initialized``, ``device``, and
the methods ``lazy_initialization``, ``update`` and ``batch_select_indices``, and on ``DynamicCache(config=)``
building one ``DynamicLayer`` per full-attention layer in ``cache.layers``. tests/engine/test_kv_cache.py checks each
of these and that decoding with this cache gives the logits of transformers' own cache, so an upgrade that
changes them fails there, loudly, rather than in a slow or wrong generation.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def buffered_layer_class() -> type:
    """``BufferedLayer``, built on first use so that importing mipo does not import transformers."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        capacity: int  # set per cache: the prompt width plus max_new_tokens

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            batch, heads, _, _ = key_states.shape
            shape = (batch, heads, self.capacity)
            self.device = key_states.device
            self.key_buffer = torch.empty(
                (*shape, key_states.shape[-1]), dtype=key_states.dtype, device=self.device
            )
            self.value_buffer = torch.empty(
                (*shape, value_states.shape[-1]), dtype=value_states.dtype, device=self.device
            )
            self.length = 0
            self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.key_buffer.shape[-2]:
                raise RuntimeError(f"cache capacity {self.key_buffer.shape[-2]} exceeded")
            self.key_buffer[:, :, self.length : end] = key_states
            self.value_buffer[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self.key_buffer = self.key_buffer[indices]
                self.value_buffer = self.value_buffer[indices]
                self.keys = self.key_buffer[:, :, : self.length]
                self.values = self.value_buffer[:, :, : self.length]

    return BufferedLayer


def preallocated_cache(model: Any, capacity: int) -> Any:
    """The model's ``DynamicCache`` with its full-attention layers growing inside preallocated buffers.

    Other layer kinds (sliding-window, linear attention) are kept as the model's config makes them.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    buffered = buffered_layer_class()
    cache_ = DynamicCache(config=model.config)
    layers = []
    for layer in cache_.layers:
        if type(layer) is DynamicLayer:
            layer = buffered()
            layer.capacity = capacity
        layers.append(layer)
    cache_.layers = layers
    return cache_
