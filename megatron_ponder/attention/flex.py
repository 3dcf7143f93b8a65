"""Soft mask as a FlexAttention `score_mod` over a causal block mask.

Training needs CUDA: torch 2.13 FlexAttention raises NotImplementedError for backward on CPU. On CPU
the forward runs unfused (eager, materialises the scores), which is enough for forward-only checks.
Gradients to the captured key_log_w use atomics on GPU: not bitwise deterministic.
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .registry import register_backend


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=32)
def _causal_block_mask(seq: int, device: str) -> BlockMask:
    """One causal block mask per (S, device), shared by all batches and heads (B=H=None broadcast)."""
    return create_block_mask(_causal, None, None, seq, seq, device=device)


# Every distinct shape is its own graph (dynamic=False keeps the kernels specialised; growth
# passes change S, training and evaluation differ in grad mode): PonderLM-3 at K 3 needs about 4
# in training and 4 in evaluation, exactly dynamo's default recompile limit of 8, past which it
# silently ran flex eagerly with S x S scores. This bound is flex's own, and past it the call
# fails naming it, never falls back.
FLEX_RECOMPILE_LIMIT = 32


@functools.lru_cache(maxsize=None)
def compiled_flex(backend: str = "inductor"):
    """flex_attention compiled once per process (per backend: tests count graphs on CPU), with its
    own recompile budget that other compiled regions do not share."""
    return torch.compile(flex_attention, backend=backend, dynamic=False,
                         recompile_limit=FLEX_RECOMPILE_LIMIT, isolate_recompiles=True)


def run_compiled_flex(q, k, v, backend: str = "inductor", **kwargs) -> torch.Tensor:
    """The compiled flex kernel; a shape past FLEX_RECOMPILE_LIMIT raises instead of going eager."""
    try:
        # Read by dynamo when it decides to recompile: a hit raises instead of running eager.
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            return compiled_flex(backend)(q, k, v, **kwargs)
    except torch._dynamo.exc.FailOnRecompileLimitHit as exc:
        raise RuntimeError(
            f"flex attention needed more than FLEX_RECOMPILE_LIMIT={FLEX_RECOMPILE_LIMIT} compiled "
            f"graphs (this one: q {tuple(q.shape)}, {q.dtype}); running it eagerly would "
            f"materialise the S x S scores. Raise the limit in attention/flex.py if this many "
            f"shapes are expected, or use ponder.attention_backend=augmented") from exc


def _needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


@register_backend("flex")
# Under train.compile (model/compile.py) this stays outside the layer's graph: it compiles
# flex_attention itself, and its cached block masks are Python state dynamo would re-trace.
@torch.compiler.disable(reason="flex compiles its own kernel")
def flex_soft_mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             key_log_w: Optional[torch.Tensor], *, scale: float) -> torch.Tensor:
    """Soft-mask causal attention. q [B,Hq,S,D], k/v [B,Hkv,S,D], key_log_w [B,S] or None -> [B,Hq,S,D]."""
    s = q.shape[2]
    if q.device.type != "cuda" and _needs_grad(q, k, v, key_log_w):
        raise NotImplementedError(
            "ponder.attention_backend='flex' needs CUDA for training (torch 2.13 FlexAttention has no "
            "CPU backward); use 'augmented' on CPU")
    if q.device.type != "cuda":
        # torch refuses CPU inputs that merely require grad, even under no_grad: detach them.
        q, k, v = q.detach(), k.detach(), v.detach()
        key_log_w = None if key_log_w is None else key_log_w.detach()
    score_mod = None
    if key_log_w is not None:
        log_w = key_log_w.float()  # scores are fp32 inside the kernel; keep the bias at full precision

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + log_w[b, kv_idx]

    block_mask = _causal_block_mask(s, str(q.device))
    kwargs = dict(score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    if q.device.type == "cuda":
        return run_compiled_flex(q, k, v, **kwargs)
    with warnings.catch_warnings():
        # The eager path warns that it is unfused; on CPU that is the intended forward-only use.
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, **kwargs)
