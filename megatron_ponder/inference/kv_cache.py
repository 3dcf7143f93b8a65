"""The slot KV cache (method.md section 5): per cached slot its keys, values and log w.

A slot that the hard rule prunes is never stored, so a sequence's cache length is the
number of slots it kept. Rows of a batch fill at their own pace (different prompt lengths,
different kept steps); positions past a row's length carry log w = -inf and are never seen.

The cache reaches megatron's attention through the `attention_mask` argument: an object
with `attend(layer, q, k, v, attend_fn, scale)` that SoftMaskCoreAttention hands the
layer's new queries, keys and values to (model/core_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CacheFullError(RuntimeError):
    pass


class SlotKVCache:
    """keys/values per layer [B, H_kv, capacity, D], allocated on first use; log_w [B, capacity]."""

    def __init__(self, batch: int, capacity: int, device: torch.device | str = "cpu"):
        self.capacity = capacity
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.log_w = torch.full((batch, capacity), float("-inf"), device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)

    def layer(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's storage; `like` [b, H_kv, s, D] gives heads, head dim and dtype."""
        if layer not in self.keys:
            shape = (self.log_w.shape[0], like.shape[1], self.capacity, like.shape[3])
            self.keys[layer] = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.values[layer] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return self.keys[layer], self.values[layer]

    def _reserve(self, row_lengths: torch.Tensor) -> None:
        if int(row_lengths.max()) > self.capacity:
            raise CacheFullError(f"slot KV cache capacity {self.capacity} exceeded "
                                 f"(a row needs {int(row_lengths.max())} slots)")

    def insert(self, row: int, record: "RecordedPass") -> None:
        """Store the kept slots of a prefill pass (batch of one) in `row`, which must be empty."""
        kept = record.kept_slots()
        n = int(kept.sum())
        self._reserve(self.lengths[row:row + 1] + n)
        for layer, (k, v) in record.kv.items():
            keys, values = self.layer(layer, k)
            keys[row, :, :n] = k[0][:, kept]
            values[row, :, :n] = v[0][:, kept]
        bias = (record.key_log_w[0] if record.key_log_w is not None
                else torch.zeros(len(kept), device=kept.device))
        self.log_w[row, :n] = bias[kept].to(self.log_w)
        self.lengths[row] = n

    def step(self, rows: torch.Tensor, slot_log_w: torch.Tensor) -> "DecodeStep":
        """One new slot for each of `rows` [b], with bias slot_log_w [b] (0 for token slots)."""
        return DecodeStep(self, rows, slot_log_w)


class DecodeStep:
    """Appends one slot per active row in every layer, attending over that row's cache."""

    def __init__(self, cache: SlotKVCache, rows: torch.Tensor, slot_log_w: torch.Tensor):
        cache._reserve(cache.lengths[rows] + 1)
        self.cache, self.rows = cache, rows
        self.positions = cache.lengths[rows]  # where the new slot goes, per row
        cache.log_w[rows, self.positions] = slot_log_w.to(cache.log_w)
        self.span = int(self.positions.max()) + 1
        visible = torch.arange(self.span, device=rows.device) <= self.positions[:, None]
        bias = cache.log_w[rows, :self.span].masked_fill(~visible, float("-inf"))
        self.bias = bias[:, None, None, :]  # [b, 1, 1, span]: every head, the one query

    def attend(self, layer: int, q, k, v, attend_fn, scale: float) -> torch.Tensor:
        """q [b, Hq, 1, D], k/v [b, H_kv, 1, D] -> [b, Hq, 1, D]."""
        keys, values = self.cache.layer(layer, k)
        keys[self.rows, :, self.positions] = k[:, :, 0]
        values[self.rows, :, self.positions] = v[:, :, 0]
        ks, vs = keys[self.rows, :, :self.span], values[self.rows, :, :self.span]
        return F.scaled_dot_product_attention(q, ks, vs, attn_mask=self.bias.to(q.dtype),
                                              scale=scale, enable_gqa=q.shape[1] != ks.shape[1])

    def commit(self) -> None:
        self.cache.lengths[self.rows] += 1


class RecordedPass:
    """A prefill pass: attends like training (the backend, causal, key bias) and keeps
    every layer's keys and values, so the kept slots can enter the cache afterwards."""

    def __init__(self, key_log_w: torch.Tensor | None):
        self.key_log_w = key_log_w  # [1, S]; -inf marks a pruned slot
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def attend(self, layer: int, q, k, v, attend_fn, scale: float) -> torch.Tensor:
        self.kv[layer] = (k, v)
        return attend_fn(q, k, v, self.key_log_w, scale=scale)

    def kept_slots(self) -> torch.Tensor:
        """bool [S]: the slots the hard rule kept (all of them without a bias)."""
        keys = next(iter(self.kv.values()))[0]
        if self.key_log_w is None:
            return torch.ones(keys.shape[2], dtype=torch.bool, device=keys.device)
        return self.key_log_w[0].isfinite()
