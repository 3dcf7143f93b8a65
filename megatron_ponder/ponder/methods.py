"""The baselines that share the decoder with PonderLM-3 (method.md section 7).

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
from megatron_ponder.ponder.slots import deinterleave, interleave, slot_position_ids


def _positions(tokens: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.shape[1], device=tokens.device)


def vanilla_forward(backbone: Backbone, tokens: torch.Tensor) -> PonderOutput:
    hidden = backbone.run(backbone.embed(tokens), _positions(tokens))
    return PonderOutput(backbone.lm_logits(hidden), [1])


def ponderlm1_forward(backbone: Backbone, tokens: torch.Tensor, k: int) -> PonderOutput:
    embeddings = backbone.embed(tokens)
    positions = _positions(tokens)
    logits = backbone.lm_logits(backbone.run(embeddings, positions))
    for _ in range(k):
        inputs = embeddings + backbone.expected_embedding(logits)
        logits = backbone.lm_logits(backbone.run(inputs, positions))
    return PonderOutput(logits, [1] * (k + 1))


def loop_forward(backbone: Backbone, tokens: torch.Tensor, k: int) -> PonderOutput:
    hidden = backbone.embed(tokens)
    positions = _positions(tokens)
    for _ in range(k + 1):
        hidden = backbone.run(hidden, positions, final_norm=False)
    return PonderOutput(backbone.lm_logits(backbone.final_norm(hidden)), [1] * (k + 1))


def pause_forward(backbone: Backbone, tokens: torch.Tensor, k: int) -> PonderOutput:
    embeddings = backbone.embed(tokens)
    pause = backbone.pause_inputs(embeddings)
    x = interleave([embeddings] + [pause] * k)
    hidden = backbone.run(x, slot_position_ids(tokens.shape[1], k + 1, x.device))
    return PonderOutput(backbone.lm_logits(deinterleave(hidden, k + 1)[k]), [k + 1])
