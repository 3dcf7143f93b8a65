"""Training loss and the per-step pondering statistics (method.md section 3).

Every mean over tokens is over the positions the loss counts (loss_mask): the compute
penalty, and the statistics that report it, ignore the positions the LM loss ignores.
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.decisive import decisive_per_token
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.router import hard_rule_keeps


def token_mean(values: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-token values [B, L] over the positions loss_mask [B, L] counts (all
    positions without a mask)."""
    if loss_mask is None:
        return values.mean()
    return (values * loss_mask).sum() / loss_mask.sum().clamp(min=1)


def expected_steps_per_token(log_w: torch.Tensor) -> torch.Tensor:
    """E[steps] = sum_{k>=1} w_k per token: log w [L, B, K+1] -> [B, L]."""
    return log_w[..., 1:].exp().sum(-1).transpose(0, 1)


def ponder_statistics(log_s: torch.Tensor, log_w: torch.Tensor, tau: float,
                      loss_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Mean expected extra steps E[steps] = sum_{k>=1} w_k, router entropy (nats), and the
    share of latent slots the hard rule (keep k while w_k >= tau) would prune; means over
    the positions loss_mask counts."""
    with torch.no_grad():
        entropy = -(log_s.exp() * log_s).sum(-1).transpose(0, 1)
        pruned = (~hard_rule_keeps(log_w, tau)).float()
        return {
            "expected_steps": token_mean(expected_steps_per_token(log_w), loss_mask).item(),
            "router_entropy": token_mean(entropy, loss_mask).item(),
            "pruned_share": (token_mean(pruned.mean(-1).transpose(0, 1), loss_mask).item()
                             if pruned.numel() else 0.0),
        }


def ponder_loss(
    backbone: Backbone,
    output: PonderOutput,
    labels: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    compute_penalty: float = 0.0,
    decisive: tuple[float, float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(objective, parts): the objective is the mean next-token cross-entropy over the L real
    tokens (labels [B, L]), plus, for PonderLM-3, compute_penalty * mean_t sum_{k>=1} w_{t,k}
    (0 by default) and the decisive-router term (ponder/decisive.py) when
    decisive = (weight, threshold, tau) has a weight > 0. parts: "lm_loss" always, "penalty"
    (the sum of the terms that apply, detached) when any applies; what reports a loss
    reports parts["lm_loss"], never the objective."""
    lm_loss = token_mean(backbone.cross_entropy(output.logits, labels), loss_mask)
    loss = lm_loss
    parts = {"lm_loss": lm_loss.detach()}
    terms = []
    if output.log_w is not None and compute_penalty > 0:
        terms.append(compute_penalty * token_mean(expected_steps_per_token(output.log_w), loss_mask))
    if output.log_w is not None and decisive is not None and decisive[0] > 0:
        weight, threshold, tau = decisive
        terms.append(weight * token_mean(decisive_per_token(output.log_w, tau, threshold), loss_mask))
    if terms:
        penalty = sum(terms)
        loss = loss + penalty
        parts["penalty"] = penalty.detach()
    return loss, parts
