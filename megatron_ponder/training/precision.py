"""Mixed precision: parameters, gradients and optimizer state stay fp32 in every engine;
train.precision=bf16 runs the forward under torch.autocast(bfloat16), on GPU and CPU alike.

What stays fp32 where precision matters: the router (ponder/router.py runs it with autocast
off), log s and log w (computed from fp32 logits), the fusion weights (exp of log s), the
vocabulary-parallel cross-entropy (fp32 logits), PonderLM-1's softmax over the vocabulary.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from megatron_ponder.config import Config, Precision

Context = Callable[[], ContextManager]


def forward_autocast(cfg: Config, device: torch.device) -> Context:
    if Precision.uses_bf16(cfg.train.precision, device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def backward_autocast(cfg: Config, device: torch.device) -> Context:
    """The context for backward calls. On CPU the backward runs under the forward's autocast:
    megatron's linear layers declare their autocast state for CUDA only
    (custom_fwd/custom_bwd(device_type="cuda")), so on CPU their backward would multiply a
    bf16 gradient with the fp32 weight. On CUDA, custom_bwd restores the forward's autocast
    for exactly those layers, and autograd's own backward formulas need none."""
    if device.type == "cpu":
        return forward_autocast(cfg, device)
    return contextlib.nullcontext
