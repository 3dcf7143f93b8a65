"""Gradient reductions the engines do not do for us."""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def sequence_parallel_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights whose gradients are partial sums over the TP ranks under sequence
    parallelism: those Transformer Engine marks `sequence_parallel` (the norms inside the
    stack, which see only this rank's share of the sequence)."""
    return [p for p in model.parameters() if getattr(p, "sequence_parallel", False)]


def allreduce_sequence_parallel_grads(model: torch.nn.Module) -> None:
    """One coalesced all-reduce over the TP group completes the partial gradients of
    `sequence_parallel_params`."""
    grads = [p.grad for p in sequence_parallel_params(model) if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=parallel_state.get_tensor_model_parallel_group())
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)
