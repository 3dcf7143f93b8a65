"""Name -> soft-mask attention backend, selected by the config field `ponder.attention_backend`.

Every backend is a plain function with the same contract:

    attention(q, k, v, key_log_w, *, scale) -> out
    q: [B, Hq, S, D]; k, v: [B, Hkv, S, D], Hq % Hkv == 0 (query head h uses kv head h // (Hq // Hkv))
    key_log_w: [B, S] float (log of the per-key soft-mask weight, 0 for token slots, <= 0) or None
    out: [B, Hq, S, D] in q's dtype (possibly a non-contiguous view)

    logit_ij = scale * q_i . k_j + key_log_w[b, j] for j <= i, -inf for j > i; same bias for every head.

Heads are whatever the caller passes (the local heads of a tensor-parallel rank): the bias is per key,
so no backend needs to know the global head count.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

AttentionFn = Callable[..., torch.Tensor]

# Built-in names, in order of preference for documentation; `flex` needs CUDA to train.
ATTENTION_BACKENDS: Tuple[str, ...] = ("reference", "augmented", "flex")

_BACKENDS: Dict[str, AttentionFn] = {}


def register_backend(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: register `fn` under `name` (refuses to silently replace an existing one)."""

    def deco(fn: AttentionFn) -> AttentionFn:
        if name in _BACKENDS and _BACKENDS[name] is not fn:
            raise ValueError(f"attention backend {name!r} is already registered")
        _BACKENDS[name] = fn
        return fn

    return deco


def _check_name(name: str) -> None:
    if name not in _BACKENDS:
        valid = ", ".join(repr(n) for n in sorted(_BACKENDS))
        raise ValueError(f"ponder.attention_backend={name!r} is not a known attention backend; valid values: {valid}")


def get_attention_backend(name: str) -> AttentionFn:
    """Return the backend function for `name`; ValueError naming `ponder.attention_backend` if unknown."""
    _check_name(name)
    return _BACKENDS[name]


def backend_available(name: str) -> Tuple[bool, str]:
    """(usable for training on this machine, reason if not). `flex` has no CPU backward in torch 2.13."""
    _check_name(name)
    if name == "flex":
        if not torch.cuda.is_available():
            return False, ("flex needs CUDA: torch 2.13 FlexAttention has no backward on CPU "
                           "(CPU forward-only use runs its unfused eager path)")
    return True, ""
