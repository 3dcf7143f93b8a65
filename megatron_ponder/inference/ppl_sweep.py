"""Score at tau: perplexity, latent steps and inference FLOPs per token of one model on the
same batches, at each tau given (tools/eval_ppl.py, the sweeps' records).

tau is the inference-time compute knob (method.md section 5): one trained PonderLM-3 traces
a quality-vs-FLOPs curve without retraining. Methods without a router give the same numbers
at every tau. Result keys (also the sweep records'): tau, loss, ppl, tokens, executed_steps
(latent steps per token the hard rule ran; K for the fixed-step methods), flops_per_token
(inference, method.md section 6) and flops_vs_vanilla (against a vanilla model of the same
size on the same batches).
"""

from __future__ import annotations

import math

import torch

from megatron_ponder.inference.scoring import configured, score_hard
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import VANILLA


def score_at_taus(model, batches: list[dict], taus: list[float | None],
                  jacobi: int | None = None, progress=None) -> list[dict]:
    """One row of hard-rule scores per tau over batches ({tokens, labels, loss_mask}); every
    tau is checked before any scoring. tau None: the config's, reported as None (for methods
    whose compute tau does not change)."""
    methods = [configured(model, tau) for tau in taus]
    return [_score(model, batches, tau, method, jacobi, progress)
            for tau, method in zip(taus, methods)]


def _score(model, batches, tau, method, jacobi, progress) -> dict:
    """One row: `method` (configured at the row's tau) scored over batches."""
    shape = DecoderShape.of(model.cfg.model)
    device = next(model.parameters()).device
    nll = tokens = flops = vanilla = positions = 0.0
    kept = []
    for batch in batches:
        tokens_b, labels, mask = (batch[k].to(device) for k in ("tokens", "labels", "loss_mask"))
        score = score_hard(model, tokens_b, labels, mask, jacobi=jacobi, method=method)
        nll += score.nll_sum
        tokens += score.num_tokens
        kept_b = None if score.kept_steps is None else score.kept_steps.cpu()
        # Means per token over every position of every batch.
        n, length = tokens_b.numel(), tokens_b.shape[1]
        flops += n * method.inference_flops_per_token(shape, length, kept_b)
        vanilla += n * VANILLA.inference_flops_per_token(shape, length)
        positions += n
        if kept_b is not None:
            kept.append(kept_b.flatten())
        if progress is not None:
            progress.update(1)
    loss = nll / max(tokens, 1)
    return {
        "tau": None if tau is None else method.tau, "loss": loss,
        "ppl": math.exp(min(loss, 50.0)), "tokens": int(tokens),
        "executed_steps": method.executed_steps(torch.cat(kept) if kept else None),
        "flops_per_token": flops / positions, "flops_vs_vanilla": flops / vanilla,
    }


def format_table(rows: list[dict], model) -> str:
    lines = [f"{'tau':>10} {'ppl':>10} {'loss':>8} {'steps':>6} {'FLOPs/token':>13} {'vs vanilla':>10}"]
    for r in rows:
        lines.append(f"{r['tau']:>10.3g} {r['ppl']:>10.4f} {r['loss']:>8.4f} "
                     f"{r['executed_steps']:>6.3f} {r['flops_per_token']:>13.4g} "
                     f"{r['flops_vs_vanilla']:>9.3f}x")
    if not model.method.uses_router:
        lines.append(f"({model.cfg.ponder.method} has no router: tau does not change its compute)")
    return "\n".join(lines)
