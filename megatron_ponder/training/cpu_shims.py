"""The two CUDA calls megatron-core's dist_checkpointing.save makes unconditionally.

On a machine without CUDA, `torch.cuda.current_device()` (a device for a 1-element status
tensor broadcast after writing) and `torch.cuda.synchronize()` (after device-to-host copies
that are no-ops on CPU) raise. For the duration of a save only, and only without CUDA, they
resolve to the CPU. Loading needs no shim (measured, megatron-core 0.16.1).
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import torch


@contextmanager
def cuda_calls_resolve_to_cpu():
    if torch.cuda.is_available():
        yield
        return
    with mock.patch.object(torch.cuda, "current_device", lambda: "cpu"), \
            mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None):
        yield
