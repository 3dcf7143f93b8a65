"""Full (TP 1) tensors <-> this rank's tensor-parallel shards, for every PonderLM parameter.

megatron marks sharded parameters with `tensor_model_parallel` and `partition_dim`; the
fused QKV weight is laid out group-major, so contiguous chunks are whole query groups.
The SwiGLU fc1 weight is the exception: each rank holds [gate shard; up shard], so its
full tensor is [gate; up], not the concatenation of the rank shards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_ponder.comm_device import comm_device, comm_empty


def _is_glu_fc1(name: str) -> bool:
    return name.endswith("mlp.linear_fc1.weight")


def _tp():
    return (parallel_state.get_tensor_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_world_size())


def shard_of(name: str, param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This rank's slice of `full` for parameter `name` (param gives the sharding)."""
    if not getattr(param, "tensor_model_parallel", False):
        return full
    rank, world = _tp()
    dim = param.partition_dim
    if _is_glu_fc1(name):
        gate, up = full.chunk(2, dim=dim)
        return torch.cat([gate.chunk(world, dim)[rank], up.chunk(world, dim)[rank]], dim=dim)
    return full.chunk(world, dim=dim)[rank]


def gather_full(name: str, param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Inverse of `shard_of`: the full tensor from every rank's `local` (collective)."""
    if not getattr(param, "tensor_model_parallel", False):
        return local
    rank, world = _tp()
    local = local.contiguous().to(comm_device())
    parts = [comm_empty(local.shape, local.dtype) for _ in range(world)]
    dist.all_gather(parts, local, group=parallel_state.get_tensor_model_parallel_group())
    dim = param.partition_dim
    if _is_glu_fc1(name):
        halves = [p.chunk(2, dim=dim) for p in parts]
        return torch.cat([torch.cat([h[0] for h in halves], dim), torch.cat([h[1] for h in halves], dim)], dim)
    return torch.cat(parts, dim=dim)


def load_full_state(model: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> None:
    """Load a TP-1 parameter dict into a model of any tensor-parallel size."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(shard_of(name, param, full_state[name]))


def full_state(model: torch.nn.Module, grads: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter (or its gradient) as the full TP-1 tensor, on every rank."""
    return {
        name: gather_full(name, param, param.grad if grads else param.detach())
        for name, param in model.named_parameters()
    }
