"""The decisive-router term: an optional training term that makes the router's small tails
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
