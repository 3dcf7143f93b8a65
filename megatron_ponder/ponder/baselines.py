"""The baselines that share the decoder with PonderLM-3 (method.md section 7): each method and
its pass program.

Decisions where the papers leave room (each documented in docs/decisions.md):
- PonderLM-1: pass m+1 reads e_t + sqrt(2.5 H) softmax(logits_t^(m)) @ E (the pondering
  embedding replaces, not accumulates, the previous one); logits of the last pass.
- Loop: the stack applied K+1 times to the raw residual stream, final norm once at the end.
- Pause: K copies of one learned pause vector after every token, at the token's position,
  logits from the last pause slot (H extra parameters).
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import repeated_pass_flops
from megatron_ponder.ponder.method import Method
from megatron_ponder.ponder.program import (
    Carry, PassInput, PassProgram, PonderOutput, deinterleave, interleave,
)


class VanillaProgram(PassProgram):
    passes = [1]

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        return PassInput(self.token_embeddings(), None)

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> PonderOutput:
        return PonderOutput(self.backbone.lm_logits(self.backbone.final_norm(hidden)), [1])


class PonderLM1Program(PassProgram):
    """Carry: the logits of the previous pass (this rank's vocabulary shard)."""

    def __init__(self, backbone: Backbone, tokens: torch.Tensor, k: int):
        super().__init__(backbone, tokens)
        self.passes = [1] * (k + 1)

    def carry_shapes(self, p: int) -> list[tuple[int, ...]]:
        return [(self.num_tokens, self.batch_size, self.backbone.local_vocab_size)]

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        inputs = self.token_embeddings()
        if carry is not None:
            inputs = inputs + self.backbone.expected_embedding(carry[0])
        return PassInput(inputs, None)

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> Carry | PonderOutput:
        logits = self.backbone.lm_logits(self.backbone.final_norm(hidden))
        return PonderOutput(logits, list(self.passes)) if self.is_final(p) else (logits,)


class LoopProgram(PassProgram):
    """Carry: the raw residual stream."""

    def __init__(self, backbone: Backbone, tokens: torch.Tensor, k: int):
        super().__init__(backbone, tokens)
        self.passes = [1] * (k + 1)

    def carry_shapes(self, p: int) -> list[tuple[int, ...]]:
        return [(self.num_tokens, self.batch_size, self.backbone.hidden_size)]

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        return PassInput(self.token_embeddings() if carry is None else carry[0], None)

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> Carry | PonderOutput:
        if not self.is_final(p):
            return (hidden,)
        return PonderOutput(self.backbone.lm_logits(self.backbone.final_norm(hidden)),
                            list(self.passes))


class PauseProgram(PassProgram):
    def __init__(self, backbone: Backbone, tokens: torch.Tensor, k: int):
        super().__init__(backbone, tokens)
        self.k = k
        self.passes = [k + 1]

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        embeddings = self.token_embeddings()
        pause = self.backbone.pause_inputs(embeddings)
        return PassInput(interleave([embeddings] + [pause] * self.k), None)

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> PonderOutput:
        outputs = deinterleave(self.backbone.final_norm(hidden), self.k + 1)
        return PonderOutput(self.backbone.lm_logits(outputs[self.k]), [self.k + 1])



# ------------------------------------------------------------- the methods


class Vanilla(Method):
    name = "vanilla"
    plain = True

    @classmethod
    def k_problem(cls, k):
        return None  # K is ignored: a sweep may set it alike for every method

    @property
    def latent_steps(self):
        return 0

    def program(self, backbone, tokens, **options):
        return VanillaProgram(backbone, tokens)


class RepeatedStack(Method):
    """K+1 passes of the whole stack over the L tokens: no latent slots, so no single slot
    cache (one per pass would be needed, which no experiment here asks for)."""

    decodes_with_slot_cache = False

    @property
    def slots_per_token(self):
        return 1

    def inference_flops_per_token(self, shape, num_tokens, kept_steps=None):
        per_token = repeated_pass_flops(shape, self.k + 1, num_tokens)
        return float(per_token.mean() + self.head_calls * shape.head_flops(1))


class PonderLM1(RepeatedStack):
    name = "ponderlm1"

    @property
    def head_calls(self):
        return 2 * self.k + 1  # K+1 LM heads plus K pondering embeddings softmax(logits) @ E

    def program(self, backbone, tokens, **options):
        return PonderLM1Program(backbone, tokens, self.k)


class Loop(RepeatedStack):
    name = "loop"

    def program(self, backbone, tokens, **options):
        return LoopProgram(backbone, tokens, self.k)


class Pause(Method):
    name = "pause"
    uses_pause = True

    def program(self, backbone, tokens, **options):
        return PauseProgram(backbone, tokens, self.k)

    def latent_input(self, backbone, previous):
        return backbone.pause_inputs(previous)
