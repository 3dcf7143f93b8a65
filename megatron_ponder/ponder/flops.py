"""FLOPs accounting (method.md section 6): the decoder's shape and the cost of its passes.
Each method composes these into its training and inference FLOPs (ponder/method.py).

Conventions: a multiply-add is 2 FLOPs; causal attention counts only the scores it computes
(query i attends to i+1 keys), QK^T and AV alike; backward = 2x forward; embeddings cost 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecoderShape:
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    # Channels per head (model.head_dim); None: hidden / heads.
    head_size: int | None = None

    @classmethod
    def of(cls, m) -> "DecoderShape":
        """From a config.ModelConfig (not imported: the method sits below the config)."""
        return cls(m.hidden_size, m.num_layers, m.ffn_size, m.num_attention_heads, m.kv_heads,
                   m.vocab_size, m.head_dim)

    @property
    def head_dim(self) -> int:
        return self.head_size if self.head_size is not None else self.hidden // self.heads

    @property
    def non_embedding_params(self) -> int:
        """Per-token matmul weights of the stack: QKV, output projection, SwiGLU, norms."""
        attention = (self.heads + 2 * self.kv_heads) * self.head_dim  # q, k, v widths
        qkv = self.hidden * attention
        out = self.heads * self.head_dim * self.hidden
        per_layer = qkv + out + 3 * self.hidden * self.ffn + 2 * self.hidden
        return self.layers * per_layer + self.hidden  # + final norm

    def attention_flops(self, context: int | torch.Tensor):
        """QK^T and AV of one query over `context` keys, all layers: 4 H_q d ctx per layer."""
        return 4 * self.heads * self.head_dim * self.layers * context

    def pass_flops(self, num_tokens: int, slots_per_token: int) -> int:
        """One causal forward pass over S = slots x tokens positions (one sequence)."""
        s = num_tokens * slots_per_token
        return 2 * self.non_embedding_params * s + self.attention_flops(s * (s + 1) // 2)

    def head_flops(self, num_tokens: int) -> int:
        return 2 * self.hidden * self.vocab * num_tokens


def slot_cache_flops(shape: DecoderShape, slots_per_token: torch.Tensor) -> torch.Tensor:
    """FLOPs of the stack per token [B, L] when token t appends slots_per_token[t] slots to
    one KV cache: slot j (1-based, over the sequence's cached slots) attends to j slots."""
    ends = slots_per_token.cumsum(-1)
    starts = ends - slots_per_token
    attended = (ends * (ends + 1) - starts * (starts + 1)) / 2  # sum of j over the token's slots
    return 2 * shape.non_embedding_params * slots_per_token + shape.attention_flops(attended)


def repeated_pass_flops(shape: DecoderShape, passes: int, num_tokens: int) -> torch.Tensor:
    """FLOPs of the stack per token [L] when every token runs `passes` passes, each over an
    L-long context with its own cache (Loop, PonderLM-1)."""
    positions = torch.arange(1, num_tokens + 1, dtype=torch.float64)
    return passes * (2 * shape.non_embedding_params + shape.attention_flops(positions))
