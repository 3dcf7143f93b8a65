"""The baselines that share the decoder with PonderLM-3 (method.md section 7), as pass programs.

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
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.program import Carry, PassInput, PassProgram
from megatron_ponder.ponder.slots import deinterleave, interleave


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
