"""Build a PonderLM after validating everything that can be checked without tensors."""

from __future__ import annotations

import torch
from megatron.core import parallel_state

from megatron_ponder.config import Config, ConfigError, validate
from megatron_ponder.model.ponder_lm import PonderLM


def build_model(cfg: Config, params_dtype: torch.dtype = torch.float32, *,
                fused_kernels: bool = False) -> PonderLM:
    """fused_kernels: Transformer Engine's layer spec (CUDA only; model/spec.py)."""
    validate(cfg)  # before any allocation: a bad field never costs a model build
    tp = cfg.parallel.tensor_model_parallel_size
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("call megatron_ponder.parallel.initialize_parallel(cfg) before build_model")
    actual = parallel_state.get_tensor_model_parallel_world_size()
    if actual != tp:
        raise ConfigError(
            f"parallel.tensor_model_parallel_size={tp} does not match the initialised "
            f"tensor-parallel group of size {actual}"
        )
    return PonderLM(cfg, params_dtype, fused_kernels)
