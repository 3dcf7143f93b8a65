"""The PonderLM-3 router and its tail probabilities (method.md section 3).

The router reads h_t^(0), the final-norm output of token t's own slot, and predicts
s_t = P(token t needs exactly k pondering steps), k = 0..K. The soft mask uses the tail
w_{t,k} = P(steps >= k) = sum_{j >= k} s_{t,j}, computed in log space.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn


class RouterKind(enum.StrEnum):
    """ponder.router: the router's network (the config checks the setting against these)."""

    LINEAR = "linear"
    MLP = "mlp"


class Router(nn.Module):
    """Linear (or small MLP) map H -> K+1 logits; zero-initialised so s starts uniform."""

    def __init__(self, hidden_size: int, k: int, kind: str = RouterKind.LINEAR):
        super().__init__()
        # The config has checked the setting: a kind outside RouterKind is a programming
        # error, and RouterKind's own ValueError says so.
        if RouterKind(kind) is RouterKind.LINEAR:
            self.net = last = nn.Linear(hidden_size, k + 1)
        else:
            self.net = nn.Sequential(
                nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, k + 1)
            )
            last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        """h0: [..., H] -> router logits [..., K+1], in fp32 also under bf16 autocast (its
        logits set the soft mask of every latent slot)."""
        with torch.autocast(h0.device.type, enabled=False):
            return self.net(h0.float())


def log_tail_probs(router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [..., K+1] -> (log s, log w), both [..., K+1].

    log w_k = logsumexp_{j >= k} log s_j: a reverse cumulative logsumexp, so tails whose
    probabilities underflow stay finite with finite gradients (never log of a clamp).
    log w_0 is set to exactly 0 (w_0 = 1 by definition; the sum would round to ~1e-7).
    """
    log_s = torch.log_softmax(router_logits.float(), dim=-1)
    log_w = torch.logcumsumexp(log_s.flip(-1), dim=-1).flip(-1)
    log_w = torch.cat([torch.zeros_like(log_w[..., :1]), log_w[..., 1:]], dim=-1)
    # Rounding can make a tail exceed the previous one by one ulp; w must be non-increasing.
    log_w = torch.cummin(log_w, dim=-1).values
    return log_s, log_w


def hard_rule_keeps(log_w: torch.Tensor, tau: float) -> torch.Tensor:
    """The inference rule: latent step k >= 1 runs iff w_k >= tau. log_w [..., K+1] ->
    bool [..., K]; w is non-increasing, so the kept steps are always 1..K_hat."""
    return log_w[..., 1:] >= math.log(tau)


def hard_log_w(log_w: torch.Tensor, tau: float) -> torch.Tensor:
    """The hard rule as a key bias: log w [..., K+1] with every pruned latent step at -inf.

    Kept steps keep their bias log w (inference caches it with the slot's K/V); the token
    step keeps 0. exp() of the result is the fusion weight mask of the kept steps.
    """
    keep = torch.cat([torch.ones_like(log_w[..., :1], dtype=torch.bool),
                      hard_rule_keeps(log_w, tau)], dim=-1)
    return log_w.masked_fill(~keep, float("-inf"))
