"""Gradient reductions the engines do not do for us."""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def allreduce_sequence_parallel_grads(model: torch.nn.Module) -> None:
    """Under sequence parallelism each TP rank's norms inside the stack saw only its share of
    the sequence: their gradients are partial sums (Transformer Engine marks these weights
    `sequence_parallel`). One coalesced all-reduce over the TP group completes them."""
    grads = [p.grad for p in model.parameters()
             if getattr(p, "sequence_parallel", False) and p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=parallel_state.get_tensor_model_parallel_group())
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)
