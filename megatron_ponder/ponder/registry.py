"""One switch selects the method; all run on the same decoder. The six methods, by name.

This module and the config's list of valid names are the only places that know method
names; everything else asks the `Method` object (ponder/method.py).
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import DecoderShape, repeated_pass_flops
from megatron_ponder.ponder.latent import LatentThoughtsProgram
from megatron_ponder.ponder.method import Method
from megatron_ponder.ponder.methods import (
    LoopProgram, PauseProgram, PonderLM1Program, VanillaProgram,
)
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.program import PassProgram, run_locally
from megatron_ponder.ponder.router import hard_rule_keeps, log_tail_probs
from megatron_ponder.ponder.token_plan import TokenPlan


class Vanilla(Method):
    name = "vanilla"
    plain = True

    def k_problem(self, k):
        return None  # K is ignored: a sweep may set it alike for every method

    def latent_steps(self, k):
        return 0

    def program(self, backbone, tokens, **options):
        return VanillaProgram(backbone, tokens)


class RepeatedStack(Method):
    """K+1 passes of the whole stack over the L tokens: no latent slots, so no single slot
    cache (one per pass would be needed, which no experiment here asks for)."""

    decodes_with_slot_cache = False

    def slots_per_token(self, k):
        return 1

    def inference_flops_per_token(self, shape, k, num_tokens, kept_steps=None):
        per_token = repeated_pass_flops(shape, k + 1, num_tokens)
        return float(per_token.mean() + self.head_calls(k) * shape.head_flops(1))


class PonderLM1(RepeatedStack):
    name = "ponderlm1"

    def head_calls(self, k):
        return 2 * k + 1  # K+1 LM heads plus K pondering embeddings softmax(logits) @ E

    def program(self, backbone, tokens, *, k, **options):
        return PonderLM1Program(backbone, tokens, k)


class Loop(RepeatedStack):
    name = "loop"

    def program(self, backbone, tokens, *, k, **options):
        return LoopProgram(backbone, tokens, k)


class Pause(Method):
    name = "pause"
    uses_pause = True

    def program(self, backbone, tokens, *, k, **options):
        return PauseProgram(backbone, tokens, k)

    def latent_input(self, backbone, previous):
        return backbone.pause_inputs(previous)


class PonderLM2(Method):
    name = "ponderlm2"
    uses_jacobi = True

    def program(self, backbone, tokens, *, k, jacobi=3, latent_init="growth", grad_passes=0,
                hard_tau=None):
        # The soft mask and the hard rule are the router's: without one, every slot is kept.
        return LatentThoughtsProgram(backbone, tokens, k=k, jacobi=jacobi,
                                     adaptive=self.uses_router, latent_init=latent_init,
                                     grad_passes=grad_passes,
                                     hard_tau=hard_tau if self.uses_router else None)


class PonderLM3(PonderLM2):
    name = "ponderlm3"
    uses_router = True

    def router_flops(self, shape: DecoderShape, k):
        return 2 * shape.hidden * (k + 1)

    def executed_steps(self, k, kept_steps=None):
        # float64: a mean of integer counts, as exact as the analysis tools compute it
        return float(self._require_kept(kept_steps).double().mean())

    def cache_slots(self, k, num_tokens, kept_steps):
        return self._require_kept(kept_steps).to(torch.float64) + 1

    @staticmethod
    def _require_kept(kept_steps):
        if kept_steps is None:
            raise ValueError("ponderlm3's inference steps need kept_steps from the hard rule")
        return kept_steps

    def decode_plan(self, backbone, h0, k, tau):
        log_s, log_w = log_tail_probs(backbone.route(h0))  # [1, b, K+1]
        return TokenPlan(hard_rule_keeps(log_w, tau).sum(-1)[0], log_s[0], log_w[0])


_REGISTRY: dict[str, Method] = {
    m.name: m for m in (Vanilla(), PonderLM1(), PonderLM2(), Loop(), Pause(), PonderLM3())}
METHODS = tuple(_REGISTRY)
# The yardstick of inference FLOPs: a plain decoder of the same size (method.md section 6).
VANILLA = _REGISTRY["vanilla"]


def names_where(has) -> list[str]:
    """Names of the methods for which has(method) holds, in registry order."""
    return [name for name, method in _REGISTRY.items() if has(method)]


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"ponder.method={name!r} is invalid: valid values: "
                         f"{', '.join(METHODS)}") from None


def build_program(method: str, backbone: Backbone, tokens: torch.Tensor, *, k: int,
                  **options) -> PassProgram:
    """The pass program of `method` on tokens [B, L] (options: see Method.program)."""
    return get_method(method).program(backbone, tokens, k=k, **options)


def method_forward(method: str, backbone: Backbone, tokens: torch.Tensor, **options) -> PonderOutput:
    """Run `method` on tokens [B, L] with the whole stack in this process."""
    return run_locally(build_program(method, backbone, tokens, **options))
