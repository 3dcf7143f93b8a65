"""Latent thoughts: the PonderLM-2 backbone and PonderLM-3's soft-masked version.

Pass schedule (method.md section 4), for K latent steps:
  pass 0       L token slots -> h^(0) (and, adaptive, the router's s and log w)
  growth       m = 1..K-1: slots 0..m per token, latent inputs from the previous pass
  Jacobi       J full passes over all (K+1) L slots, every latent input from the previous
               iterate at once (and the router re-estimated from the new h^(0))
  final        one more full pass; fuse and predict.
Slot (t, k >= 1) takes h_t^(k-1), the final-norm output of slot (t, k-1), as its input.

With `hard_tau` the same schedule runs inference's hard rule (method.md section 5): latent
slots with w < tau get key bias -inf from the first pass on and are left out of the fusion.
At the Jacobi fixed point this equals slot-by-slot decoding with a pruned KV cache.
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.router import hard_log_w, log_tail_probs
from megatron_ponder.ponder.schedule import GradientWindow
from megatron_ponder.ponder.slots import deinterleave, interleave, slot_key_bias, slot_position_ids


def latent_thoughts_forward(
    backbone: Backbone,
    tokens: torch.Tensor,
    *,
    k: int,
    jacobi: int,
    adaptive: bool,
    latent_init: str = "growth",
    grad_passes: int = 0,
    hard_tau: float | None = None,
) -> PonderOutput:
    """PonderLM-2 (adaptive=False: every latent slot fully visible, logits from slot K) or
    PonderLM-3 (adaptive=True: keys of latent slots biased by log w, outputs fused by s;
    with hard_tau, the hard-pruned inference forward instead of the soft mask)."""
    num_tokens = tokens.shape[1]
    embeddings = backbone.embed(tokens)
    growth_steps = range(1, k) if latent_init == "growth" else range(0)
    full_passes = jacobi + 1 if k > 0 else 0
    window = GradientWindow(1 + len(growth_steps) + full_passes, grad_passes)
    pass_slots: list[int] = []
    log_s = log_w = None

    def key_log_w() -> torch.Tensor:
        return log_w if hard_tau is None else hard_log_w(log_w, hard_tau)

    def run_pass(latent_inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        nonlocal log_s, log_w
        n = len(latent_inputs) + 1
        pass_slots.append(n)
        with window.next_pass():
            x = interleave([embeddings, *latent_inputs])
            positions = slot_position_ids(num_tokens, n, x.device)
            bias = slot_key_bias(key_log_w(), n) if adaptive and n > 1 else None
            outputs = deinterleave(backbone.run(x, positions, bias), n)
            if adaptive:
                log_s, log_w = log_tail_probs(backbone.route(outputs[0]))
        return outputs

    outputs = run_pass([])
    if latent_init == "copy":
        outputs = outputs * max(k, 1)  # cheap start: every latent input is h^(0)
    for m in growth_steps:
        outputs = run_pass(outputs[:m])
    for _ in range(full_passes):
        outputs = run_pass(outputs[:k])

    if adaptive:
        # Hard rule: no renormalisation over the kept steps (the dropped mass is < tau).
        weights = log_s.exp() * key_log_w().isfinite()
        fused = sum(weights[..., j, None] * outputs[j] for j in range(k + 1))
    else:
        fused = outputs[k]
    return PonderOutput(backbone.lm_logits(fused), pass_slots, log_s, log_w)
