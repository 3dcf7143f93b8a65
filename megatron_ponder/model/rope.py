"""RoPE driven by explicit position ids (every slot of a token shares its position).

megatron's own RotaryEmbedding builds frequencies for positions 0..S-1 on the CUDA device;
our slots repeat positions, so we index a precomputed table by position id instead. The
frequency scalings of model.rope_scaling follow transformers' modeling_rope_utils
(`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`), which is what the
checkpoints we import were trained with; megatron-core's `RotaryEmbedding._apply_scaling` is
the same llama3 formula, but with fixed low/high factors and context.
export/modeling_ponder.py keeps a standalone copy (tests/export/test_method_copy.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from megatron_ponder.config import ModelConfig


def _llama3(inv_freq: torch.Tensor, factor: float, low_freq_factor: float,
            high_freq_factor: float, original_max_positions: int) -> torch.Tensor:
    """Llama 3.1: wavelengths longer than original/low are stretched by `factor`, those
    shorter than original/high kept, the band between interpolated smoothly."""
    low_freq_wavelen = original_max_positions / low_freq_factor
    high_freq_wavelen = original_max_positions / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = ((original_max_positions / wavelen - low_freq_factor)
              / (high_freq_factor - low_freq_factor))
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def inverse_frequencies(m: ModelConfig) -> torch.Tensor:
    """theta^(-2i/d) for i < d/2 (d = model.head_size), after model.rope_scaling; float64."""
    d = m.head_size
    inv_freq = 1.0 / m.rotary_base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    if m.rope_scaling == "linear":
        return inv_freq / m.rope_scaling_factor
    if m.rope_scaling == "llama3":
        return _llama3(inv_freq, m.rope_scaling_factor, m.rope_low_freq_factor,
                       m.rope_high_freq_factor, m.rope_original_max_positions)
    return inv_freq


class RotaryTable(nn.Module):
    """Angles for positions 0..max_position_embeddings-1, in megatron's layout (rotate-half)."""

    def __init__(self, m: ModelConfig):
        super().__init__()
        angles = torch.outer(torch.arange(m.max_position_embeddings, dtype=torch.float64),
                             inverse_frequencies(m))
        table = torch.cat([angles, angles], dim=-1).float()
        # Derived from the config: not a parameter and not saved in checkpoints.
        self.register_buffer("table", table, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids [S] -> angles [S, 1, 1, head_dim] (megatron's rotary_pos_emb)."""
        return self.table[position_ids][:, None, None, :]
