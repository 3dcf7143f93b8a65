"""Perplexity and inference FLOPs per token at several taus on the same batches.

tau is the inference-time compute knob (method.md section 5): one trained PonderLM-3 traces
a quality-vs-FLOPs curve without retraining. Methods without a router give the same numbers
at every tau.
"""

from __future__ import annotations

import math

from megatron_ponder.inference.scoring import check_tau, score_hard
from megatron_ponder.ponder.flops import DecoderShape, inference_flops_per_token


def sweep_taus(model, batches: list[dict], taus: list[float], jacobi: int | None = None,
               progress=None) -> list[dict]:
    """One row per tau: loss, ppl, mean latent steps, inference FLOPs per token (and their
    ratio to a vanilla model of the same size)."""
    for tau in taus:
        check_tau(tau)
    cfg = model.cfg
    shape = DecoderShape.of(cfg.model)
    device = next(model.parameters()).device
    rows = []
    for tau in taus:
        nll = tokens = flops = vanilla = steps = positions = 0.0
        for batch in batches:
            tokens_b, labels, mask = (batch[k].to(device) for k in ("tokens", "labels", "loss_mask"))
            score = score_hard(model, tokens_b, labels, mask, tau=tau, jacobi=jacobi)
            nll += score.nll_sum
            tokens += score.num_tokens
            length = tokens_b.shape[1]
            flops += inference_flops_per_token(shape, cfg.ponder.method, cfg.ponder.k, length,
                                               score.kept_steps)
            vanilla += inference_flops_per_token(shape, "vanilla", 0, length)
            if score.kept_steps is not None:
                steps += score.kept_steps.float().sum().item()
                positions += score.kept_steps.numel()
            if progress is not None:
                progress.update(1)
        loss = nll / max(tokens, 1)
        fixed = {"vanilla": 0, "ponderlm2": cfg.ponder.k, "pause": cfg.ponder.k}
        rows.append({
            "tau": tau, "loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(tokens),
            "mean_latent_steps": steps / positions if positions else fixed.get(cfg.ponder.method),
            "inference_flops_per_token": flops / len(batches),
            "inference_flops_vs_vanilla": flops / vanilla,
        })
    return rows


def format_table(rows: list[dict], method: str) -> str:
    lines = [f"{'tau':>10} {'ppl':>10} {'loss':>8} {'steps':>6} {'FLOPs/token':>13} {'vs vanilla':>10}"]
    for r in rows:
        steps = "-" if r["mean_latent_steps"] is None else f"{r['mean_latent_steps']:.3f}"
        lines.append(f"{r['tau']:>10.3g} {r['ppl']:>10.4f} {r['loss']:>8.4f} {steps:>6} "
                     f"{r['inference_flops_per_token']:>13.4g} {r['inference_flops_vs_vanilla']:>9.3f}x")
    if method != "ponderlm3":
        lines.append(f"({method} has no router: tau does not change its compute)")
    return "\n".join(lines)
