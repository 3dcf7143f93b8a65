"""Validation: loss, perplexity, and what the hard rule would spend at inference.

Inference FLOPs here come from the router's decisions in the soft forward (K_hat_t =
#{k >= 1 : w_{t,k} >= tau}); the hard-pruned forward itself belongs to the inference engine.
"""

from __future__ import annotations

import math

import torch

from megatron_ponder.ponder.flops import DecoderShape, inference_flops_per_token
from megatron_ponder.ponder.router import hard_rule_keeps


def kept_steps(log_w: torch.Tensor, tau: float) -> torch.Tensor:
    """log_w [L, B, K+1] -> K_hat [B, L], the latent steps the hard rule runs."""
    return hard_rule_keeps(log_w, tau).sum(-1).transpose(0, 1).cpu()


@torch.no_grad()
def evaluate(model, batches, device, autocast) -> dict[str, float]:
    was_training = model.training
    model.eval()
    cfg = model.cfg
    shape = DecoderShape.of(cfg.model)
    total_loss = total_tokens = 0.0
    stats_sum: dict[str, float] = {}
    flops_sum = vanilla_sum = 0.0
    for batch in batches:
        tokens, labels, mask = (batch[k].to(device) for k in ("tokens", "labels", "loss_mask"))
        with autocast():
            out = model(tokens)
        loss, _ = model.loss(out, labels, mask)
        n = mask.sum().item()
        total_loss += loss.item() * n
        total_tokens += n
        for key, value in model.statistics(out).items():
            stats_sum[key] = stats_sum.get(key, 0.0) + value
        length = tokens.shape[1]
        kept = kept_steps(out.log_w, cfg.ponder.tau) if out.log_w is not None else None
        flops_sum += inference_flops_per_token(shape, cfg.ponder.method, cfg.ponder.k, length, kept)
        vanilla_sum += inference_flops_per_token(shape, "vanilla", 0, length)
    model.train(was_training)
    if not batches:
        return {}
    loss = total_loss / max(total_tokens, 1)
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)),
              "inference_flops_per_token": flops_sum / len(batches),
              "inference_flops_vs_vanilla": flops_sum / vanilla_sum}
    result.update({k: v / len(batches) for k, v in stats_sum.items()})
    return result
