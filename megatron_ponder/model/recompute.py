"""Activation recomputation (`train.recompute`): keep only a region's inputs in the forward and
recompute its activations in the backward.

- `layers`: each transformer layer of each pass keeps only its input; in the backward one layer
  at a time is recomputed. Implemented as a layer spec swap (RecomputedTransformerLayer).
- `passes`: each pass keeps only the input of the block stack (one pipeline stage's layers,
  with pipeline parallelism: a pipeline unit); in the backward one pass's stack is recomputed.

Why torch's non-reentrant checkpoint and not megatron-core's `tensor_parallel.checkpoint` (which
TransformerConfig's recompute_granularity="full" uses): megatron's is reentrant, so each
recomputed region runs its own nested backward, and a weight that 18-22 passes share is
reported ready once per region: torch DDP (the former CPU engine) rejected that ("Expected to mark a
variable ready only once", measured). The non-reentrant form recomputes inside the one backward, so every engine sees what it sees
without recomputation. It also reads no CUDA RNG state, so one code path runs on CPU and GPU.

RNG: torch's checkpoint restores the default CPU and CUDA generators before recomputing; it
does not restore megatron's tracked CUDA RNG states. Nothing in a layer draws random numbers
(to_transformer_config sets both dropouts to 0), so the recomputation is exact either way.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_layer import TransformerLayer
from torch.utils.checkpoint import checkpoint

def recomputed(function, *args, **kwargs):
    """function(*args, **kwargs), its activations recomputed in the backward."""
    return checkpoint(function, *args, use_reentrant=False, **kwargs)


def should_recompute(module: torch.nn.Module) -> bool:
    """Only a training forward that builds a graph has activations to drop (evaluation, the
    truncated passes of ponder.grad_passes and decoding run without autograd)."""
    return module.training and torch.is_grad_enabled()


class RecomputedTransformerLayer(TransformerLayer):
    """megatron's TransformerLayer whose activations are recomputed in the backward."""

    def forward(self, *args, **kwargs):
        if should_recompute(self):
            return recomputed(super().forward, *args, **kwargs)
        return super().forward(*args, **kwargs)
