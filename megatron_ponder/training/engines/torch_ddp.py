"""The "megatron" engine's CPU fallback: torch DistributedDataParallel over gloo.

megatron-core's DDP and distributed optimizer allocate on "cuda" and do not run on CPU
(docs/megatron-and-deepspeed-on-cpu.md); torch DDP on megatron's data-parallel group gives
the same mathematics: gradients averaged over the data-parallel ranks once per step (no_sync
on the other micro-batches), a replicated AdamW, the TP-aware global norm for clipping.
"""

from __future__ import annotations

import contextlib

import torch
from megatron.core import parallel_state
from torch.nn.parallel import DistributedDataParallel

from megatron_ponder.config import Config
from megatron_ponder.training.engines.base import Engine


class TorchDDPEngine(Engine):
    def __init__(self, cfg: Config, model: torch.nn.Module):
        super().__init__(cfg, model)
        # Buffers (RoPE tables) are built identically from the config on every rank: no
        # broadcast before each forward.
        self.module = DistributedDataParallel(
            model, process_group=parallel_state.get_data_parallel_group(),
            forward_sync_buffers=False)

    def micro_batch(self, last: bool):
        return contextlib.nullcontext() if last else self.module.no_sync()
