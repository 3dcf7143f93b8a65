"""Validation: LM loss, perplexity, the compute penalty, and what the hard rule would
spend at inference.

The loss and perplexity are the LM loss alone; PonderLM-3's compute penalty (lambda *
E[steps]) is a training objective term, reported apart as "penalty".

Inference FLOPs here come from the router's decisions in the soft forward (K_hat_t =
#{k >= 1 : w_{t,k} >= tau}); the hard-pruned forward itself belongs to the inference engine.
With pipeline parallelism the batches run through the pipeline schedule and the last stage
scores them.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_ponder.parallel.pipeline import pipeline_step
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import VANILLA


def score_batch(model, output, batch: dict, parts: dict | None = None) -> dict[str, float]:
    """Sums over one batch: LM loss x tokens, penalty x tokens, tokens, statistics, inference
    FLOPs per token. parts: the loss parts if the caller has already computed the loss of
    `output` (the loss consumes the logits: model/decoder.py's cross_entropy)."""
    cfg = model.cfg
    shape = DecoderShape.of(cfg.model)
    if parts is None:
        _, parts = model.loss(output, batch["labels"], batch["loss_mask"])
    n = batch["loss_mask"].sum().item()
    length = batch["tokens"].shape[1]
    kept = output.kept_steps(model.method.tau)
    kept = kept.cpu() if kept is not None else None
    return {"loss_sum": parts["lm_loss"].item() * n,
            "penalty_sum": float(parts.get("penalty", 0.0)) * n, "tokens": n,
            "stats": model.statistics(output, batch["loss_mask"]),
            "flops": model.method.inference_flops_per_token(shape, length, kept),
            "vanilla_flops": VANILLA.inference_flops_per_token(shape, length)}


def _summarize(scores: list[dict]) -> dict[str, float]:
    if not scores:
        return {}
    tokens = sum(s["tokens"] for s in scores)
    loss = sum(s["loss_sum"] for s in scores) / max(tokens, 1)
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)),
              "penalty": sum(s["penalty_sum"] for s in scores) / max(tokens, 1),
              "inference_flops_per_token": sum(s["flops"] for s in scores) / len(scores),
              "inference_flops_vs_vanilla": sum(s["flops"] for s in scores)
              / sum(s["vanilla_flops"] for s in scores)}
    for key in scores[0]["stats"]:
        result[key] = sum(s["stats"][key] for s in scores) / len(scores)
    return result


@torch.no_grad()
def evaluate(model, batches, device, autocast) -> dict[str, float]:
    was_training = model.training
    model.eval()
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        scores = pipeline_step(model, batches, 0, autocast, train=False,
                               score=functools.partial(score_batch, model)).scores
    else:
        scores = []
        for batch in batches:
            with autocast():
                output = model(batch["tokens"])
            scores.append(score_batch(model, output, batch))
    model.train(was_training)
    return _summarize(_gather_over_data_parallel(scores))


def _gather_over_data_parallel(scores: list[dict]) -> list[dict]:
    """Every data-parallel rank's scores (rank r holds validation micro-batches r, r + dp,
    ...): every layout reports over the same validation set. Objects, once per evaluation."""
    dp = parallel_state.get_data_parallel_world_size()
    if dp == 1:
        return scores
    gathered = [None] * dp
    dist.all_gather_object(gathered, scores, group=parallel_state.get_data_parallel_group())
    return [score for rank_scores in gathered for score in rank_scores]
