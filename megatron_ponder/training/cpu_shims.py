"""megatron-core's literal CUDA calls, resolved to the CPU on a machine without CUDA.

megatron-core 0.16.1 assumes a GPU in code that is otherwise device-agnostic, so that its
DistributedDataParallel, distributed optimizer and dist_checkpointing.save run over gloo on
CPU once these calls resolve to the CPU:

- `torch.cuda.current_device()` as a device (grad/param buffers, a checkpoint-save status
  tensor), `torch.cuda.synchronize()` (after device-to-host copies that are no-ops on CPU);
- tensors created with a literal `device="cuda"` (the optimizer's unit loss scale and
  overflow buffer, clip_grads' norm accumulators), and `tensor.cuda()`;
- `param.type() == "torch.cuda.FloatTensor"`: the distributed optimizer sorts parameters into
  fp32 / fp16 / bf16 groups by their CUDA type name and refuses any other; a CPU tensor
  answers with its CUDA twin's name (same dtype, same group).

Only inside `cuda_calls_resolve_to_cpu()` and only without CUDA (on a GPU it does nothing):
the engine enters it around megatron's own calls, never around the model's forward/backward.
Collectives need nothing here: gloo in torch 2.13 has every one megatron's DDP and distributed
optimizer issue (engines/megatron_ddp.py lists them).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode

CPU = torch.device("cpu")


def _is_cuda(device) -> bool:
    if isinstance(device, int):  # torch.cuda.current_device()'s answer on a GPU
        return True
    return device is not None and torch.device(device).type == "cuda"


class _CudaOnCpu(TorchFunctionMode):
    """Creates on the CPU what megatron asks to create on "cuda"; see the module docstring."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = CPU
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs and not args[0].is_cuda:
            return func(*args).replace("torch.", "torch.cuda.", 1)
        return func(*args, **kwargs)


@contextmanager
def cuda_calls_resolve_to_cpu():
    if torch.cuda.is_available():
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch.cuda, "current_device", lambda: "cpu"))
        stack.enter_context(mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None))
        stack.enter_context(_CudaOnCpu())
        yield
