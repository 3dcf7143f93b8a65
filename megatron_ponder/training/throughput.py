"""Model FLOPs utilisation: the method's real training FLOPs over the device's peak."""

from __future__ import annotations

import functools
import re
import time
import warnings
from typing import Optional

import torch

# Dense BF16 tensor-core peaks, TFLOP/s: the datasheet's dense figure, or its "with sparsity" one halved.
# Each row: (model token, variant tokens that must all be in the name, TFLOP/s), most specific
# first. A name is split at spaces and dashes and matched by whole tokens, never by substring:
# "H100" alone is ambiguous (SXM 989, NVL 835, PCIe 756) and an A10G is not an A10.
# Sources (NVIDIA datasheets, 2024-2025):
#   H100 SXM 1979 / NVL 1671 / PCIe 1513 sparse: nvidia.com/en-us/data-center/h100 (datasheet)
#   H200 SXM 1979 / NVL 1671 sparse: nvidia.com/en-us/data-center/h200
#   GH200 1979 sparse: nvidia.com/en-us/data-center/grace-hopper-superchip
#   A100 40/80 GB, SXM and PCIe, 312 dense: nvidia.com/en-us/data-center/a100 (datasheet)
#   L4 121 dense / 242 sparse BF16: nvidia.com/en-us/data-center/l4
#   L40S 362 dense / 733 sparse: nvidia.com/en-us/data-center/l40s ; L40 181 / 362: .../l40
#   A10 250 sparse: nvidia.com/en-us/data-center/products/a10-gpu
#   B200 (HGX B200, per GPU) 4.5 PF sparse: nvidia.com/en-us/data-center/hgx
# V100 has no BF16 tensor cores and is left out on purpose (it warns, like any unknown name).
GPU_PEAK_BF16_TFLOPS = (
    ("H100", {"PCIE"}, 756.5),
    ("H100", {"NVL"}, 835.5),
    ("H100", {"SXM5"}, 989.5),
    ("H100", {"HBM3"}, 989.5),  # SXM5 boards report themselves as "NVIDIA H100 80GB HBM3"
    ("H200", {"NVL"}, 835.5),
    ("H200", set(), 989.5),  # "NVIDIA H200" is the SXM board
    ("GH200", set(), 989.5),
    ("A100", {"PCIE"}, 312.0),
    ("A100", {"SXM4"}, 312.0),
    ("L4", set(), 121.0),
    ("L40", set(), 181.0),
    ("L40S", set(), 362.0),
    ("A10", set(), 125.0),
    ("B200", set(), 2250.0),
)


def gpu_peak_flops(name: str) -> Optional[float]:
    """Dense BF16 peak FLOP/s of the GPU called `name` (torch.cuda.get_device_name), or None
    when the name matches no row exactly enough to trust."""
    tokens = set(re.split(r"[\s\-_]+", name.upper()))
    for model, variant, tflops in GPU_PEAK_BF16_TFLOPS:
        if model in tokens and variant <= tokens:
            return tflops * 1e12
    return None


@functools.lru_cache(maxsize=None)
def peak_flops(override_tflops: float = 0.0) -> Optional[float]:
    """Peak FLOP/s of this process's device: the override, the GPU table, or on CPU the measured
    rate of a large fp32 matmul (the best this CPU does on dense math). None, with a warning, for
    a GPU the table does not know: the run goes on and reports no MFU."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = gpu_peak_flops(name)
        if peak is None:
            warnings.warn(f"GPU {name!r} is not in training/throughput.py's peak table: MFU is not "
                          f"reported; set train.peak_tflops to its dense BF16 peak to get it",
                          RuntimeWarning, stacklevel=2)
        return peak
    # Best of many short trials: a busy machine can only make a trial slower, never faster.
    gen = torch.Generator().manual_seed(0)  # never the global RNG: resumed runs must match
    a, b = torch.randn(1024, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def mfu(flops: float, seconds: float, peak: Optional[float], devices: int = 1) -> Optional[float]:
    """Model FLOPs utilisation of `devices` devices, or None when the peak is unknown."""
    return None if peak is None else flops / seconds / peak / devices
