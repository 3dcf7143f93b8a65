"""Model FLOPs utilisation: the method's real training FLOPs over the device's peak."""

from __future__ import annotations

import functools
import time

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                 "V100": 125e12, "B200": 2250e12, "GH200": 989e12}


@functools.lru_cache(maxsize=None)
def peak_flops(override_tflops: float = 0.0) -> float:
    """Peak FLOP/s of this process's device: the override, a GPU table, or on CPU the
    measured rate of a large fp32 matmul (the best this CPU does on dense math)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in GPU_PEAK_BF16.items():
            if key in name:
                return value
        raise ValueError(f"unknown GPU {name!r}: set train.peak_tflops for MFU")
    # Best of many short trials: a busy machine can only make a trial slower, never faster.
    gen = torch.Generator().manual_seed(0)  # never the global RNG: resumed runs must match
    a, b = torch.randn(1024, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best
