"""Latent thoughts: PonderLM-2 and PonderLM-3 (its soft-masked version) and their pass program.

Pass schedule (method.md section 4), for K latent steps:
  pass 0       L token slots -> h^(0) (and, adaptive, the router's s and log w)
  growth       m = 1..K-1: slots 0..m per token, latent inputs from the previous pass
  Jacobi       J full passes over all (K+1) L slots, every latent input from the previous
               iterate at once (and the router re-estimated from the new h^(0))
  final        one more full pass; fuse and predict.
Slot (t, k >= 1) takes h_t^(k-1), the final-norm output of slot (t, k-1), as its input.
The carry between passes is the next pass's latent inputs (and log w when adaptive).

With `tau` the same schedule runs inference's hard rule (method.md section 5): latent
slots with w < tau get key bias -inf from the first pass on and are left out of the fusion.
At the Jacobi fixed point this equals slot-by-slot decoding with a pruned KV cache.
"""

from __future__ import annotations

import enum

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.method import Method, TokenPlan
from megatron_ponder.ponder.program import (
    Carry, PassInput, PassProgram, PonderOutput, deinterleave, interleave, slot_key_bias,
)
from megatron_ponder.ponder.router import hard_log_w, hard_rule_keeps, log_tail_probs


class LatentInit(enum.StrEnum):
    """ponder.latent_init: how the latent inputs start before the Jacobi passes."""

    GROWTH = "growth"  # PonderLM-2's growth passes: slots 0..m for m = 1..K-1
    COPY = "copy"  # every latent input starts as h^(0), right after pass 0


def first_pass_with_grad(total_passes: int, grad_passes: int) -> int:
    """Index of the first pass that keeps autograd when only the last `grad_passes` passes
    do (0 keeps every pass). The truncated variant trades exact gradients through the
    Jacobi solve for memory and time; it is a measured option, not the default."""
    return 0 if grad_passes == 0 else max(0, total_passes - grad_passes)


class LatentThoughtsProgram(PassProgram):
    """PonderLM-2 (adaptive=False: every latent slot fully visible, logits from slot K) or
    PonderLM-3 (adaptive=True: keys of latent slots biased by log w, outputs fused by s;
    with tau, the hard-pruned inference forward at that threshold instead of the soft mask)."""

    def __init__(self, backbone: Backbone, tokens: torch.Tensor, *, k: int, jacobi: int,
                 adaptive: bool, latent_init: str = LatentInit.GROWTH, grad_passes: int = 0,
                 tau: float | None = None):
        super().__init__(backbone, tokens)
        self.k, self.adaptive, self.tau = k, adaptive, tau
        growth = list(range(2, k + 1)) if LatentInit(latent_init) is LatentInit.GROWTH else []
        full = [k + 1] * (jacobi + 1) if k > 0 else []
        self.passes = [1, *growth, *full]
        self.first_pass_with_grad = first_pass_with_grad(len(self.passes), grad_passes)
        self.log_s = self.log_w = None  # the router's latest estimate (last stage)

    def _key_log_w(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_w if self.tau is None else hard_log_w(log_w, self.tau)

    def has_key_bias(self, p: int) -> bool:
        return self.adaptive and self.passes[p] > 1

    def carry_shapes(self, p: int) -> list[tuple[int, ...]]:
        length, batch, hidden = self.num_tokens, self.batch_size, self.backbone.hidden_size
        shapes = [(self.passes[p + 1] - 1, length, batch, hidden)]
        if self.adaptive:
            shapes.append((length, batch, self.k + 1))
        return shapes

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        latents = [] if carry is None else list(carry[0].unbind(0))
        hidden = interleave([self.token_embeddings(), *latents])
        bias = (slot_key_bias(self._key_log_w(carry[1]), self.passes[p])
                if self.has_key_bias(p) else None)
        return PassInput(hidden, bias)

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> Carry | PonderOutput:
        n = self.passes[p]
        outputs = deinterleave(self.backbone.final_norm(hidden), n)
        if self.adaptive:
            self.log_s, self.log_w = log_tail_probs(self.backbone.route(outputs[0]))
        if not self.is_final(p):
            needed = self.passes[p + 1] - 1
            # "copy" initialisation: after pass 0 every latent input starts as h^(0).
            pool = outputs * needed if n == 1 else outputs
            latents = torch.stack(pool[:needed])
            return (latents, self.log_w) if self.adaptive else (latents,)
        if self.adaptive:
            # Hard rule: no renormalisation over the kept steps (the dropped mass is < tau).
            weights = self.log_s.exp() * self._key_log_w(self.log_w).isfinite()
            fused = sum(weights[..., j, None] * outputs[j] for j in range(self.k + 1))
        else:
            fused = outputs[self.k]
        return PonderOutput(self.backbone.lm_logits(fused), list(self.passes),
                            self.log_s, self.log_w)


# ------------------------------------------------------------- the methods


class PonderLM2(Method):
    name = "ponderlm2"
    uses_jacobi = True

    def program(self, backbone, tokens, *, jacobi=None, tau=None):
        # The soft mask and the hard rule are the router's: without one, every slot is kept.
        return LatentThoughtsProgram(
            backbone, tokens, k=self.k, jacobi=self.jacobi_eval if jacobi is None else jacobi,
            adaptive=self.uses_router, latent_init=self.latent_init,
            grad_passes=self.grad_passes, tau=tau if self.uses_router else None)


class PonderLM3(PonderLM2):
    name = "ponderlm3"
    uses_router = True

    def router_flops(self, shape: DecoderShape):
        return 2 * shape.hidden * (self.k + 1)

    def executed_steps(self, kept_steps=None):
        # float64: a mean of integer counts, as exact as the analysis tools compute it
        return float(self._require_kept(kept_steps).double().mean())

    def cache_slots(self, num_tokens, kept_steps):
        return self._require_kept(kept_steps).to(torch.float64) + 1

    @staticmethod
    def _require_kept(kept_steps):
        if kept_steps is None:
            raise ValueError("ponderlm3's inference steps need kept_steps from the hard rule")
        return kept_steps

    def decode_plan(self, backbone, h0):
        log_s, log_w = log_tail_probs(backbone.route(h0))  # [1, b, K+1]
        return TokenPlan(hard_rule_keeps(log_w, self.tau).sum(-1)[0], log_s[0], log_w[0])
