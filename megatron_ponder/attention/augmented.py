"""Soft mask through stock fused causal attention by augmenting the head dimension (exact).

q~ = [q, 1], k~ = [k, log_w / scale], v~ = [v, 0]  =>  scale * q~.k~ = scale * q.k + log_w, and the
extra output channel is sum_j p_ij * 0 = 0, dropped. The gradient reaches log_w through k~.
O(S) memory: the fused kernel never materialises the S x S bias.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .registry import register_backend

# exp(-1e4) is exactly 0 in an fp32/bf16/fp16 softmax, so a key at this floor is removed exactly.
# An -inf in k~ makes the fused backward compute dq~[..., D] = sum_j dS_ij * k~_j[D] = 0 * -inf = NaN
# (measured on the CPU flash kernel). That channel's gradient is dropped here (the 1s are constants),
# but a finite floor keeps every kernel's arithmetic free of inf/NaN instead of relying on that.
# clamp_min passes no gradient to clamped keys, matching the reference (zero weight, zero gradient).
LOG_W_FLOOR = -1.0e4


def _pad_width(head_dim: int, device: torch.device) -> int:
    """Extra channels after the bias channel: CUDA flash/efficient kernels want D % 8 == 0.

    On CPU the flash kernel takes any D and padding 65 -> 72/80 was measured slower, so none.
    """
    if device.type == "cuda":
        return (-(head_dim + 1)) % 8
    return 0


@register_backend("augmented")
def augmented_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_log_w: Optional[torch.Tensor], *, scale: float) -> torch.Tensor:
    """Soft-mask causal attention. q [B,Hq,S,D], k/v [B,Hkv,S,D], key_log_w [B,S] or None -> [B,Hq,S,D]."""
    b, hq, s, d = q.shape
    hkv = k.shape[1]
    # enable_gqa lets the kernel index kv heads itself: measured faster than expanding kv on CPU
    # and saves the expanded copies.
    gqa = hq != hkv
    if key_log_w is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)

    pad = _pad_width(d, q.device)
    # fp16 tops out at 65504: keep floor / scale representable there (at D 128: floor about -2900).
    floor = max(LOG_W_FLOOR, -0.5 * torch.finfo(k.dtype).max * scale)
    bias = (key_log_w.clamp_min(floor) / scale).to(k.dtype)  # [B, S]
    q_aug = F.pad(q, (0, 1), value=1.0)
    k_aug = torch.cat([k, bias[:, None, :, None].expand(b, hkv, s, 1)], dim=-1)
    v_aug = F.pad(v, (0, 1))
    if pad:
        q_aug, k_aug, v_aug = (F.pad(t, (0, pad)) for t in (q_aug, k_aug, v_aug))
    out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, is_causal=True, scale=scale, enable_gqa=gqa)
    return out[..., :d]
