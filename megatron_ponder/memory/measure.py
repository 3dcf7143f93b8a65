"""Memory of a piece of code: exact tensor bytes on any device (TensorMemoryTracker), and the
process's peak resident memory on Linux (what the benchmarks report on CPU).

TensorMemoryTracker counts every tensor storage the code creates from its creation until it
is freed.

A TorchDispatchMode sees each operator's outputs (forward and backward, also inside
activation recomputation); a finalizer on each new storage subtracts it when the storage dies.
So `held` after a forward is what it keeps alive for the backward (its activations and its
outputs), and `peak` is the most ever alive at once, counted in bytes of tensor storage: what
CUDA's max_memory_allocated reports, without allocator rounding or caching. The dispatch hook
costs time per operator: use it on small models (tests, the planner's checks).
"""

from __future__ import annotations

import os
import resource
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """with TensorMemoryTracker() as mem: ...  -> mem.held, mem.peak (bytes, since entering)."""

    def __init__(self):
        super().__init__()
        self.held = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.held -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or key in inputs or storage.nbytes() == 0:
                continue  # a view or an in-place result: no new memory
            self._seen.add(key)
            self.held += storage.nbytes()
            self.peak = max(self.peak, self.held)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def reset_peak(self) -> None:
        self.peak = self.held


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(reset_ok: bool) -> int:
    """VmHWM since the last reset_peak_rss(); without a reset, the lifetime peak (which may
    overstate the peak after a given moment)."""
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
