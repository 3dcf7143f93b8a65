"""RoPE driven by explicit position ids (every slot of a token shares its position).

megatron's own RotaryEmbedding builds frequencies for positions 0..S-1 on the CUDA device;
our slots repeat positions, so we index a precomputed table by position id instead. The
frequency scalings of model.rope_scaling follow transformers' modeling_rope_utils
(`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`), which is what the
checkpoints we import were trained with; megatron-core's `RotaryEmbedding._apply_scaling` is
the same llama3 formula, but with fixed low/high factors and context. YaRN's attention factor
is not an angle: `softmax_scale` puts its square on the attention logits.
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


def _yarn(inv_freq: torch.Tensor, base: float, factor: float, original_max_positions: int,
          beta_fast: float, beta_slow: float) -> torch.Tensor:
    """YaRN: frequencies turning fewer than beta_slow times over the original context are
    divided by `factor`, those turning more than beta_fast times kept, a linear ramp between
    (over whole channel pairs, as transformers' truncate=True)."""
    d = 2 * len(inv_freq)

    def pair_of(rotations):  # the channel index turning `rotations` times in the context
        wavelengths = original_max_positions / (rotations * 2 * math.pi)
        return d * math.log(wavelengths) / (2 * math.log(base))

    low, high = max(math.floor(pair_of(beta_fast)), 0), min(math.ceil(pair_of(beta_slow)), d - 1)
    high = high + 0.001 if low == high else high  # transformers' guard against 0 / 0
    ramp = ((torch.arange(d // 2, dtype=inv_freq.dtype) - low) / (high - low)).clamp(0, 1)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)


def _linear(inv_freq: torch.Tensor, m: ModelConfig) -> torch.Tensor:
    return inv_freq / m.rope_scaling_factor


# model.rope_scaling -> its frequency formula (config.ROPE_SCALINGS names the fields each reads).
_FREQUENCY_SCALINGS = {
    "linear": _linear,
    "llama3": lambda inv_freq, m: _llama3(inv_freq, m.rope_scaling_factor, m.rope_low_freq_factor,
                                          m.rope_high_freq_factor, m.rope_original_max_positions),
    "yarn": lambda inv_freq, m: _yarn(inv_freq, m.rotary_base, m.rope_scaling_factor,
                                      m.rope_original_max_positions, m.rope_beta_fast,
                                      m.rope_beta_slow),
}


def inverse_frequencies(m: ModelConfig) -> torch.Tensor:
    """theta^(-2i/d) for i < d/2 (d = model.head_size), after model.rope_scaling; float64."""
    d = m.head_size
    inv_freq = 1.0 / m.rotary_base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    if m.rope_scaling is None:
        return inv_freq
    return _FREQUENCY_SCALINGS[m.rope_scaling](inv_freq, m)


def softmax_scale(m: ModelConfig) -> float | None:
    """The attention logits' scale where RoPE changes it, None for megatron's 1 / sqrt(d).
    YaRN multiplies cos and sin by its attention factor: q and k each, so the logits by its
    square (our angle table carries angles only; the factor goes here instead). Only YaRN
    reads model.rope_attention_factor (config validation refuses it elsewhere)."""
    if m.rope_attention_factor is None:
        return None
    return m.rope_attention_factor ** 2 / math.sqrt(m.head_size)


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
