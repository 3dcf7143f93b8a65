"""Gradient reductions the engines do not do for us."""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state

_QK_NORMS = (".q_layernorm.", ".k_layernorm.")


def sequence_parallel_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights whose gradients are partial sums over the TP ranks under sequence
    parallelism: those Transformer Engine marks `sequence_parallel` (the norms inside the
    stack, which see only this rank's share of the sequence)."""
    return [p for p in model.parameters() if getattr(p, "sequence_parallel", False)]


def tensor_parallel_partial_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """`sequence_parallel_params` and, with TP > 1, the per-head query/key norms
    (model.qk_norm): replicated on every TP rank, each rank's gradient covers only its own
    heads. The same two sets megatron's finalize_model_grads sums (the GPU megatron engine)."""
    params = {id(p): p for p in sequence_parallel_params(model)}
    if dist.is_initialized() and parallel_state.get_tensor_model_parallel_world_size() > 1:
        params |= {id(p): p for name, p in model.named_parameters()
                   if any(norm in f".{name}" for norm in _QK_NORMS)}
    return list(params.values())


def allreduce_tensor_parallel_partial_grads(model: torch.nn.Module) -> None:
    """One coalesced all-reduce over the TP group completes the partial gradients of
    `tensor_parallel_partial_params` (under the megatron engine the gradients live in its
    buffers, p.grad is None, and its finalize_model_grads does this instead)."""
    grads = [p.grad for p in tensor_parallel_partial_params(model) if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=parallel_state.get_tensor_model_parallel_group())
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)
