"""What a method needs from the network: the protocol the megatron decoder implements."""

from __future__ import annotations

from typing import Protocol

import torch


class Backbone(Protocol):
    """Sequence-first tensors throughout ([S, B, H]), as in megatron-core."""

    hidden_size: int  # H
    local_vocab_size: int  # this rank's share of the vocabulary (the logits' last dim)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> scaled token embeddings s * E[x], [L, B, H] (s = model.embed_scale)."""

    def run(self, inputs: torch.Tensor, position_ids: torch.Tensor,
            key_log_w: torch.Tensor | None = None, final_norm: bool = True) -> torch.Tensor:
        """One causal pass of the transformer stack (this pipeline stage's layers).

        inputs [S, B, H]; position_ids [S] (RoPE positions; every slot of a token shares
        the token's position); key_log_w [B, S] additive per-key log weight, or None.
        Returns the final-norm output [S, B, H] (the raw residual stream if not final_norm).
        """

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final RMSNorm alone (Loop applies the stack several times, then this)."""

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[L, B, H] -> logits [L, B, V_local] (this rank's vocabulary shard)."""

    def expected_embedding(self, logits: torch.Tensor) -> torch.Tensor:
        """PonderLM-1's pondering embedding: s * softmax(logits) @ E, [L, B, H]."""

    def route(self, h0: torch.Tensor) -> torch.Tensor:
        """Router logits [L, B, K+1] from the token slots' final-norm outputs."""

    def pause_inputs(self, like: torch.Tensor) -> torch.Tensor:
        """The learned pause-token input, broadcast to the shape of `like` ([L, B, H])."""

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits [L, B, V_local], labels [B, L] -> per-token loss [B, L]."""
