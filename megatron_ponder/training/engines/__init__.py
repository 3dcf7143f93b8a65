"""Data-parallel engines, chosen by parallel.engine (README: "Choosing the engine")."""

from __future__ import annotations

import torch
from megatron.core import parallel_state

from megatron_ponder.config import Config, ConfigError
from megatron_ponder.training.engines.base import Engine, data_parallel_mean


def build_engine(cfg: Config, model: torch.nn.Module) -> Engine:
    """The engine for this run's layout: DeepSpeed ZeRO when asked for; else megatron-core
    DDP + distributed optimizer on GPU and torch DDP on CPU when data-parallel; else plain."""
    if cfg.parallel.engine == "deepspeed":
        from megatron_ponder.training.engines.zero import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model)
    if parallel_state.get_data_parallel_world_size() == 1:
        return Engine(cfg, model)
    if torch.cuda.is_available():
        from megatron_ponder.training.engines.megatron_ddp import MegatronEngine

        return MegatronEngine(cfg, model)
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        # torch DDP synchronises through its own forward, which the pipeline schedule
        # bypasses: the replicas would drift apart silently.
        raise ConfigError(
            f"data-parallel size {parallel_state.get_data_parallel_world_size()} with "
            "parallel.pipeline_model_parallel_size > 1 needs a GPU on this engine (megatron-core"
            " DDP); on CPU run data parallelism or pipeline parallelism, not both")
    from megatron_ponder.training.engines.torch_ddp import TorchDDPEngine

    return TorchDDPEngine(cfg, model)


__all__ = ["Engine", "build_engine", "data_parallel_mean"]
