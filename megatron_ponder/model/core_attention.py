"""megatron-core `core_attention` module that applies the PonderLM-3 soft mask.

The per-key log weights travel through megatron's `attention_mask` argument: a float
tensor [B, S] (0 for token slots, log w for latent slots) or None for plain causal
attention. megatron's TransformerBlock passes it to every layer untouched. At inference
it is a slot KV cache step instead (inference/kv_cache.py), which attends over the cache.
"""

from __future__ import annotations

import math

import torch

from megatron.core.transformer.module import MegatronModule

from megatron_ponder.attention import get_attention_backend


class SoftMaskCoreAttention(MegatronModule):
    """Causal attention with a per-key additive bias, through a registered backend."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type,
                 cp_comm_type=None, softmax_scale=None, pg_collection=None, *,
                 backend: str = "augmented", **_unused):
        super().__init__(config=config)
        self.attend = get_attention_backend(backend)
        self.layer_number = layer_number
        head_dim = config.kv_channels
        self.scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        """query [sq, b, np, hn], key/value [sk, b, ng, hn] -> [sq, b, np * hn]."""
        # megatron's q, k, v are views of one fused QKV output. q and k are replaced by their
        # RoPE outputs, but a backend that saves v (plain SDPA without a bias, flex) would keep
        # the whole fused buffer, (heads + 2 groups) x head dim per slot, alive for the backward.
        value = value.contiguous()
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if attention_mask is not None and not torch.is_tensor(attention_mask):
            out = attention_mask.attend(self.layer_number, q, k, v, self.attend, self.scale)
        else:
            out = self.attend(q, k, v, attention_mask, scale=self.scale)
        return out.permute(2, 0, 1, 3).flatten(2)
