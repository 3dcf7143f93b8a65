"""Token-by-token decoding, the method's part (method.md section 5).

Once a new token's own slot has run, its method decides a `TokenPlan`: how many latent slots
follow (PonderLM-3: the hard rule's K_hat_t, decided up front), the key bias each of them
enters the cache with, and how the slots' outputs become the token's output. The slot KV
cache and the loop over slots live in inference/decoding.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenPlan:
    kept: torch.Tensor  # [b] latent steps each row runs
    # [b, K+1] log fusion weights over the slots; None: the last slot's output alone.
    log_s: torch.Tensor | None = None
    # [b, K+1] key bias each slot enters the cache with; None: 0 for every slot.
    log_w: torch.Tensor | None = None

    def slot_bias(self, step: int, zero: torch.Tensor) -> torch.Tensor:
        return zero if self.log_w is None else self.log_w[:, step]

    def fuse(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Outputs [1, b, H] of the slots run (zeros for rows that stopped) -> [b, H].
        Fusion over the kept steps only, no renormalisation (the dropped mass is < tau)."""
        if self.log_s is None:
            return outputs[-1][0]
        weights = self.log_s.exp()
        return sum(weights[:, j, None] * (self.kept >= j)[:, None] * outputs[j][0]
                   for j in range(len(outputs)))
