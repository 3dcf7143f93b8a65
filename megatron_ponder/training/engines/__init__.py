"""Data-parallel engines, chosen by parallel.engine (README: "Choosing the data-parallel engine")."""

from __future__ import annotations

import torch
from megatron.core import parallel_state

from megatron_ponder.config import Config
from megatron_ponder.training.engines.base import Engine, data_parallel_mean
from megatron_ponder.training.engines.megatron_ddp import MegatronEngine


def build_engine(cfg: Config, model: torch.nn.Module) -> Engine:
    """The engine for this run's layout: DeepSpeed ZeRO when asked for; else megatron-core
    DDP + distributed optimizer (GPU or CPU) when data-parallel or forced with
    parallel.force_megatron_engine; else the plain engine (one replica, torch AdamW)."""
    if cfg.parallel.uses_zero:
        # defer: deepspeed (slow import), only when parallel.engine asks for ZeRO
        from megatron_ponder.training.engines.zero import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model)
    if parallel_state.get_data_parallel_world_size() == 1 and not cfg.parallel.force_megatron_engine:
        return Engine(cfg, model)
    return MegatronEngine(cfg, model)


__all__ = ["Engine", "build_engine", "data_parallel_mean"]
