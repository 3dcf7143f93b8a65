"""RoPE driven by explicit position ids (every slot of a token shares its position).

megatron's own RotaryEmbedding builds frequencies for positions 0..S-1 on the CUDA device;
our slots repeat positions, so we index a precomputed table by position id instead.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryTable(nn.Module):
    """Angles for positions 0..max_positions-1, in megatron's layout (rotate-half)."""

    def __init__(self, head_dim: int, max_positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        table = torch.cat([angles, angles], dim=-1).float()
        # Derived from the config: not a parameter and not saved in checkpoints.
        self.register_buffer("table", table, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids [S] -> angles [S, 1, 1, head_dim] (megatron's rotary_pos_emb)."""
        return self.table[position_ids][:, None, None, :]
