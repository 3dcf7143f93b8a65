"""The "megatron" engine on one GPU (NCCL, Transformer Engine's FusedAdam when installed),
forced at DP 1 with parallel.force_megatron_engine: the same losses as the plain engine, and
checkpoints that move between the two. The test itself is test_megatron_engine_run's (which
runs on CPU over gloo); this file is the GPU entry bench/device_check.py runs, skipped
without CUDA."""

import pytest
import torch

from test_megatron_engine_run import (  # noqa: F401  (collected here, on the GPU)
    test_forced_at_dp1_it_matches_the_plain_engine_and_shares_checkpoints,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="the GPU path of the megatron engine needs CUDA")
