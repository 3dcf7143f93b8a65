"""The parallel layout against the world it runs in, checked before any process group exists.

Every rank runs these checks on the same inputs (the config and WORLD_SIZE), so a bad layout
fails on every rank at start-up with the same message; no rank is left waiting in a
rendezvous or collective for one that already quit.
"""

from __future__ import annotations

import torch

from megatron_ponder.config import Config, ConfigError


def data_parallel_size(cfg: Config, world_size: int) -> int:
    par = cfg.parallel
    return world_size // (par.tensor_model_parallel_size * par.pipeline_model_parallel_size)


def sequence_parallel_unavailable() -> str | None:
    """Why sequence parallelism cannot run here (megatron-core 0.16's torch norms refuse it
    and its sequence-parallel linears allocate CUDA buffers), or None."""
    if not torch.cuda.is_available():
        return "it needs CUDA"
    try:
        # defer: transformer_engine, only probing for it when sequence parallelism is asked
        import transformer_engine  # noqa: F401
    except ImportError:
        return "it needs Transformer Engine (its norms support a sharded sequence)"
    return None


def check_layout(cfg: Config, world_size: int) -> None:
    """Raise ConfigError naming the fields when (TP, PP, DP, batch sizes) do not fit."""
    par, t = cfg.parallel, cfg.train
    if par.sequence_parallel and (reason := sequence_parallel_unavailable()):
        raise ConfigError(f"parallel.sequence_parallel=true cannot run on this machine: {reason}; "
                          "set parallel.sequence_parallel=false")
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    if world_size % (tp * pp):
        raise ConfigError(
            f"world size {world_size} (nodes x tasks per node) is not divisible by "
            f"parallel.tensor_model_parallel_size x parallel.pipeline_model_parallel_size = "
            f"{tp} x {pp} = {tp * pp}; launch a multiple of {tp * pp} processes or change the "
            "layout")
    dp = data_parallel_size(cfg, world_size)
    if t.global_batch_size % (t.micro_batch_size * dp):
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of "
            f"train.micro_batch_size x data-parallel size = {t.micro_batch_size} x {dp} = "
            f"{t.micro_batch_size * dp} (data-parallel size = world size {world_size} / "
            f"(TP {tp} x PP {pp})); valid global batch sizes are multiples of "
            f"{t.micro_batch_size * dp}")
