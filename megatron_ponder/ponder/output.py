"""What a method's forward returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_ponder.ponder.router import hard_rule_keeps


@dataclass
class PonderOutput:
    logits: torch.Tensor  # [L, B, V_local]
    # Slots per token of each pass that ran, in order (FLOPs accounting; a Loop or
    # PonderLM-1 pass over L tokens counts as 1).
    pass_slots: list[int]
    # Router outputs of the final pass (ponderlm3 only): [L, B, K+1].
    log_s: torch.Tensor | None = None
    log_w: torch.Tensor | None = None

    def kept_steps(self, tau: float) -> torch.Tensor | None:
        """[B, L] latent steps K_hat_t the hard rule keeps at tau (None without a router)."""
        if self.log_w is None:
            return None
        return hard_rule_keeps(self.log_w, tau).sum(-1).transpose(0, 1)
