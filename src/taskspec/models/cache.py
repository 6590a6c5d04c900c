"""KV-cache rollback and compaction.

The engine keeps one plain (non-sliding) DynamicCache per request, with cache slot i holding position i: sliding
windows are applied through the attention mask instead, so rolling back is a slice and the slot ↔ position identity
survives compaction. Each layer holds keys/values of shape [batch=1, kv_heads, seq, head_dim].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache


def new_cache() -> DynamicCache:
    """An empty cache whose layers are created as full (non-sliding) DynamicLayers on first use."""
    return DynamicCache()


def cache_length(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def crop(cache: DynamicCache, length: int) -> None:
    """Drop every cached position >= length (rollback of rejected tokens)."""
    for layer in cache.layers:
        if layer.is_initialized and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


@torch.inference_mode()  # cache tensors are inference tensors (written by forwards under inference mode)
def keep_rows(cache: DynamicCache, start: int, rows: Sequence[int]) -> None:
    """Compact the cache to its first `start` positions followed by slots start + rows[0], start + rows[1], ...

    Used after a tree verification: the tree's rows were appended at `start`, and only the root and the accepted
    path stay. A leading run 0, 1, 2, ... (always the case for chains) is a plain crop.
    """
    rows = list(rows)
    if rows == list(range(len(rows))):
        crop(cache, start + len(rows))
        return
    index = torch.tensor(rows, dtype=torch.long) + start  # [m]
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        # index_select copies first, so writing over the overlapping slots is safe
        layer.keys[..., start : start + len(rows), :] = layer.keys.index_select(-2, index)
        layer.values[..., start : start + len(rows), :] = layer.values.index_select(-2, index)
    crop(cache, start + len(rows))
