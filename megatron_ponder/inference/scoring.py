"""Prefill / perplexity scoring with the hard pruning rule (method.md section 5).

The training-style parallel forward, but latent slots whose tail probability w falls
below tau get key bias -inf and are left out of the fusion: what a decoder with a pruned
KV cache computes, at the Jacobi fixed point. Inference FLOPs per token then follow from
`kept_steps` through the method's `inference_flops_per_token` (ponder/method.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from megatron_ponder.config import ConfigError
from megatron_ponder.ponder import PonderOutput


@dataclass
class HardScore:
    nll_sum: float  # sum over loss_mask of -log p(label)
    num_tokens: int  # loss_mask.sum()
    # [B, L] latent steps the hard rule ran per token (ponderlm3); None for fixed-step methods.
    kept_steps: torch.Tensor | None


def check_tau(tau: float) -> float:
    """tau is a probability threshold: 0 would keep every step, 1 would prune all of them."""
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 < tau < 1.0:
        raise ConfigError(f"tau={tau!r} is invalid: the hard-pruning threshold must lie strictly "
                          f"between 0 and 1 (the paper uses 1e-4)")
    return float(tau)


@contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def configured(model, tau: float | None = None, method=None):
    """The model's method at the tau of this call: `method` when the caller has configured one
    already (its tau checked where it entered), else the model's with `tau` checked here, once,
    else the model's own (the config's tau, checked with the config)."""
    if method is not None:
        return method
    return model.method if tau is None else model.method.with_tau(check_tau(tau))


def hard_forward(model, tokens: torch.Tensor, tau: float | None = None,
                 jacobi: int | None = None, method=None) -> PonderOutput:
    """tokens [B, L] -> the hard-pruned PonderOutput (logits [L, B, V_local]); eval mode,
    no autograd, J = ponder.jacobi_eval unless given. tau / method: see `configured`.
    Methods without a router run their ordinary eval forward."""
    method = configured(model, tau, method)
    with _eval_mode(model):  # methods without a router ignore tau
        return model(tokens, jacobi=jacobi, tau=method.tau)


def score_hard(model, tokens: torch.Tensor, labels: torch.Tensor,
               loss_mask: torch.Tensor | None = None, tau: float | None = None,
               jacobi: int | None = None, method=None) -> HardScore:
    """Sum of next-token NLL over loss_mask (labels [B, L]) under the hard rule; tau /
    method: see `configured`."""
    method = configured(model, tau, method)
    if loss_mask is None:
        loss_mask = torch.ones_like(labels, dtype=torch.float32)
    output = hard_forward(model, tokens, jacobi=jacobi, method=method)
    with torch.no_grad():
        nll = model.decoder.cross_entropy(output.logits, labels)
        mask = loss_mask.to(nll.dtype)
        nll_sum = (nll * mask).sum().item()
    return HardScore(nll_sum, int(loss_mask.sum().item()), output.kept_steps(method.tau))
