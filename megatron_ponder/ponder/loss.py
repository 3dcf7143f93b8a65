"""Training loss and the per-step pondering statistics (method.md section 3).

Every mean over tokens is over the positions the loss counts (loss_mask): the compute
penalty, and the statistics that report it, ignore the positions the LM loss ignores.

The decisive-router term: an optional training term that makes the router's small tails
cross the inference threshold tau (docs/decisions.md, "Decisive router").

Under the paper's objective every gradient that reaches a tail logit is proportional to s_k,
so a tail that is already small (w_k ~ 1e-2) gets almost no push and rarely crosses
tau = 1e-4: the hard rule prunes next to nothing (method.md section 10). This term acts on
log w_k with a gradient that does not shrink with w_k:

    mu * mean_t sum_{k>=1} [w_{t,k} < delta] * max(0, log w_{t,k} - log tau + margin)

- only on steps the router already leans away from (w < delta, the gate is not
  differentiated): which steps a token needs stays the paper's objective's choice; this
  term only makes that choice decisive;
- d/d log w_k = mu on every gated step above tau e^-margin, whatever w_k is;
- zero once w_k < tau e^-margin: a pruned step is not pushed on into underflow.
"""

from __future__ import annotations

import math

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.program import PonderOutput
from megatron_ponder.ponder.router import hard_rule_keeps

# How far below tau (in nats of w) a gated step is pushed: tau / e, so optimizer noise
# around the target does not carry it back above tau.
MARGIN_NATS = 1.0


def decisive_per_token(log_w: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """log w [L, B, K+1] -> [B, L]: sum over latent steps k >= 1 of the gated hinge
    [w_k < threshold] * max(0, log w_k - log tau + MARGIN_NATS)."""
    tails = log_w[..., 1:]
    gate = (tails.detach() < math.log(threshold)).to(tails.dtype)
    hinge = torch.relu(tails - (math.log(tau) - MARGIN_NATS))
    return (gate * hinge).sum(-1).transpose(0, 1)


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
    *,
    compute_penalty: float = 0.0,
    decisive_weight: float = 0.0,
    decisive_threshold: float = 0.05,
    tau: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(objective, parts): the objective is the mean next-token cross-entropy over the L real
    tokens (labels [B, L]), plus, for PonderLM-3, compute_penalty * mean_t sum_{k>=1} w_{t,k}
    (0 by default) and, when decisive_weight > 0, the decisive-router term pushing the steps
    with w < decisive_threshold below tau (above). parts: "lm_loss" always, "penalty" (the
    sum of the terms that apply, detached) when any applies; what reports a loss reports
    parts["lm_loss"], never the objective. The method calls this with its settings
    (Method.loss)."""
    lm_loss = token_mean(backbone.cross_entropy(output.logits, labels), loss_mask)
    loss = lm_loss
    parts = {"lm_loss": lm_loss.detach()}
    terms = []
    if output.log_w is not None and compute_penalty > 0:
        terms.append(compute_penalty * token_mean(expected_steps_per_token(output.log_w), loss_mask))
    if output.log_w is not None and decisive_weight > 0:
        decisive = decisive_per_token(output.log_w, tau, decisive_threshold)
        terms.append(decisive_weight * token_mean(decisive, loss_mask))
    if terms:
        penalty = sum(terms)
        loss = loss + penalty
        parts["penalty"] = penalty.detach()
    return loss, parts
