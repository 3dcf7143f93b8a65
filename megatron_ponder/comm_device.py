"""The one place that says on which device a tensor handed to torch.distributed lives.

NCCL only moves CUDA tensors ("No backend type associated with device type cpu"); gloo
moves CPU tensors. Every tensor created for a collective or a point-to-point message is
made here (or `.to(comm_device())`), so a CPU test exercises the same line a GPU run does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def comm_device() -> torch.device:
    """The device of the default process group's backend: the current CUDA device under
    NCCL, the CPU under gloo (or without a process group)."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def comm_tensor(data, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`torch.tensor(data, dtype=dtype)` on the communication device."""
    return torch.tensor(data, dtype=dtype, device=comm_device())


def comm_empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised receive buffer on the communication device."""
    return torch.empty(shape, dtype=dtype, device=comm_device())
