"""FLOPs accounting (method.md section 6): training FLOPs for MFU, inference FLOPs per token.

Conventions: a multiply-add is 2 FLOPs; causal attention counts only the scores it computes
(query i attends to i+1 keys), QK^T and AV alike; backward = 2x forward; embeddings cost 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_ponder.config import ModelConfig
from megatron_ponder.ponder.registry import USES_JACOBI


@dataclass(frozen=True)
class DecoderShape:
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int

    @classmethod
    def of(cls, m: ModelConfig) -> "DecoderShape":
        return cls(m.hidden_size, m.num_layers, m.ffn_size, m.num_attention_heads, m.kv_heads,
                   m.vocab_size)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def non_embedding_params(self) -> int:
        """Per-token matmul weights of the stack: QKV, output projection, SwiGLU, norms."""
        qkv = self.hidden * (self.hidden + 2 * self.kv_heads * self.head_dim)
        per_layer = qkv + self.hidden * self.hidden + 3 * self.hidden * self.ffn + 2 * self.hidden
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


def forward_flops(shape: DecoderShape, method: str, k: int, pass_slots: list[int],
                  num_tokens: int) -> int:
    """Forward FLOPs of one sequence of `num_tokens` given the passes that ran."""
    total = sum(shape.pass_flops(num_tokens, n) for n in pass_slots)
    head_calls = k + 1 if method == "ponderlm1" else 1
    total += head_calls * shape.head_flops(num_tokens)
    if method == "ponderlm1":  # softmax(logits) @ E after each of the first K passes
        total += k * shape.head_flops(num_tokens)
    if method == "ponderlm3":  # the router after every pass
        total += len(pass_slots) * 2 * shape.hidden * (k + 1) * num_tokens
    return total


def training_flops(shape: DecoderShape, method: str, k: int, pass_slots: list[int],
                   num_tokens: int, grad_passes: int = 0) -> int:
    """Forward + backward FLOPs of one sequence; passes run without autograd count once.
    Only the latent-thought methods honour grad_passes (the others keep every pass)."""
    fwd = forward_flops(shape, method, k, pass_slots, num_tokens)
    if method not in USES_JACOBI or grad_passes == 0 or grad_passes >= len(pass_slots):
        return 3 * fwd
    no_grad_slots = pass_slots[: len(pass_slots) - grad_passes]
    no_grad = sum(shape.pass_flops(num_tokens, n) for n in no_grad_slots)
    if method == "ponderlm3":  # the router runs inside each pass, without autograd there too
        no_grad += len(no_grad_slots) * 2 * shape.hidden * (k + 1) * num_tokens
    return 3 * fwd - 2 * no_grad


def inference_flops_per_token(shape: DecoderShape, method: str, k: int, num_tokens: int,
                              kept_steps: torch.Tensor | None = None) -> float:
    """Mean FLOPs to score or generate one token with a KV cache, over a sequence of
    `num_tokens`. kept_steps [B, L] (ponderlm3): latent steps K_hat_t the hard rule kept."""
    positions = torch.arange(1, num_tokens + 1, dtype=torch.float64)
    if method in ("vanilla",):
        slots_per_token = torch.ones(1, num_tokens, dtype=torch.float64)
    elif method in ("ponderlm2", "pause"):
        slots_per_token = torch.full((1, num_tokens), k + 1.0, dtype=torch.float64)
    elif method == "ponderlm3":
        if kept_steps is None:
            raise ValueError("ponderlm3 inference FLOPs need kept_steps from the hard rule")
        slots_per_token = kept_steps.to(torch.float64) + 1
    elif method in ("loop", "ponderlm1"):
        # K+1 passes over an L-long context each, one head per pass for PonderLM-1.
        per_pass = 2 * shape.non_embedding_params + shape.attention_flops(positions)
        heads = (2 * k + 1) if method == "ponderlm1" else 1
        return float(((k + 1) * per_pass).mean() + heads * shape.head_flops(1))
    else:
        raise ValueError(f"unknown method {method!r}")
    # Slot j (1-based, over the kept slots of the whole sequence) attends to j cached slots.
    ends = slots_per_token.cumsum(-1)
    starts = ends - slots_per_token
    attended = (ends * (ends + 1) - starts * (starts + 1)) / 2  # sum of j over the token's slots
    per_token = 2 * shape.non_embedding_params * slots_per_token + shape.attention_flops(attended)
    per_token = per_token + shape.head_flops(1)
    if method == "ponderlm3":
        per_token = per_token + 2 * shape.hidden * (k + 1)
    return float(per_token.mean())
