"""The interleaved slot layout (method.md section 2).

Slot (t, k) of token t sits at index t * n + k for n slots per token; k = 0 is the token
slot. Every slot of token t has RoPE position t, so pruning a slot never shifts a position.
"""

from __future__ import annotations

import torch


def interleave(slots: list[torch.Tensor]) -> torch.Tensor:
    """n tensors [L, B, H] (slot k of every token) -> [n L, B, H] in slot order."""
    return torch.stack(slots, dim=1).flatten(0, 1)


def deinterleave(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """[n L, B, H] -> n tensors [L, B, H], inverse of `interleave`."""
    return list(x.unflatten(0, (x.shape[0] // n, n)).unbind(1))


def slot_position_ids(num_tokens: int, n: int, device: torch.device) -> torch.Tensor:
    """[n L] positions: 0,..,0, 1,..,1, ... (n copies of each token position)."""
    return torch.arange(num_tokens, device=device).repeat_interleave(n)


def slot_key_bias(log_w: torch.Tensor, n: int) -> torch.Tensor:
    """Per-key attention bias for slots 0..n-1: log_w [L, B, K+1] -> [B, n L].

    Token slots get log w_0 = 0; latent slot (t, k) gets log w_{t,k}.
    """
    return log_w[:, :, :n].permute(1, 0, 2).flatten(1)
