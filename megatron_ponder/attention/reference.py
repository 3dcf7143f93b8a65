"""Oracle backend: the soft mask as an explicit [B, 1, S, S] float bias. O(S^2) memory; for tests."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .registry import register_backend


def expand_kv(x: torch.Tensor, num_q_heads: int) -> torch.Tensor:
    """[B, Hkv, S, D] -> [B, Hq, S, D] so that query head h reads kv head h // (Hq // Hkv)."""
    b, hkv, s, d = x.shape
    if num_q_heads % hkv:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of kv heads ({hkv})")
    rep = num_q_heads // hkv
    return x if rep == 1 else x[:, :, None].expand(b, hkv, rep, s, d).reshape(b, num_q_heads, s, d)


def causal_bias(key_log_w: Optional[torch.Tensor], batch: int, seq: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """[B or 1, 1, S, S] float bias: -inf above the diagonal plus key_log_w[b, j] on every column j."""
    causal = torch.full((seq, seq), float("-inf"), dtype=dtype, device=device).triu(1)
    if key_log_w is None:
        return causal[None, None]
    return causal[None, None] + key_log_w.to(dtype)[:, None, None, :]


@register_backend("reference")
def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_log_w: Optional[torch.Tensor], *, scale: float) -> torch.Tensor:
    """Soft-mask causal attention via an explicit bias. q [B,Hq,S,D], k/v [B,Hkv,S,D], key_log_w [B,S]."""
    b, hq, s, _ = q.shape
    bias = causal_bias(key_log_w, b, s, q.dtype, q.device)
    # kv expanded explicitly (not enable_gqa) so the oracle shares as little as possible with the
    # fused backends. A bias that needs a gradient sends SDPA to its O(S^2) math path.
    return F.scaled_dot_product_attention(q, expand_kv(k, hq), expand_kv(v, hq), attn_mask=bias, scale=scale)
