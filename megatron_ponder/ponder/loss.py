"""Training loss and the per-step pondering statistics (method.md section 3)."""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.router import hard_rule_keeps


def ponder_statistics(log_s: torch.Tensor, log_w: torch.Tensor, tau: float) -> dict[str, float]:
    """Mean expected extra steps E[steps] = sum_{k>=1} w_k, router entropy (nats), and the
    share of latent slots the hard rule (keep k while w_k >= tau) would prune."""
    with torch.no_grad():
        w = log_w[..., 1:].exp()
        entropy = -(log_s.exp() * log_s).sum(-1)
        pruned = (~hard_rule_keeps(log_w, tau)).float()
        return {
            "expected_steps": w.sum(-1).mean().item(),
            "router_entropy": entropy.mean().item(),
            "pruned_share": pruned.mean().item() if pruned.numel() else 0.0,
        }


def ponder_loss(
    backbone: Backbone,
    output: PonderOutput,
    labels: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    compute_penalty: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean next-token cross-entropy over the L real tokens (labels [B, L]), plus
    compute_penalty * mean_t sum_{k>=1} w_{t,k} for PonderLM-3 (0 by default)."""
    per_token = backbone.cross_entropy(output.logits, labels)
    if loss_mask is None:
        lm_loss = per_token.mean()
    else:
        lm_loss = (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)
    loss = lm_loss
    parts = {"lm_loss": lm_loss.detach()}
    if output.log_w is not None and compute_penalty > 0:
        expected_steps = output.log_w[..., 1:].exp().sum(-1).mean()
        loss = loss + compute_penalty * expected_steps
        parts["penalty"] = (compute_penalty * expected_steps).detach()
    return loss, parts
