"""Activation recomputation (`train.recompute`): keep only a region's inputs in the forward and
recompute its activations in the backward.

- `layers`: each transformer layer of each pass keeps only its input; in the backward one layer
  at a time is recomputed. The built layers become RecomputedTransformerLayers
  (recompute_each_layer).
- `passes`: each pass keeps only the input of the block stack (one pipeline stage's layers,
  with pipeline parallelism: a pipeline unit); in the backward one pass's stack is recomputed
  (recompute_each_pass; the decoder wraps its stack call).

Both are applied to a built model by model/transforms.py, before compilation.

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


def recompute_each_layer(model: torch.nn.Module) -> None:
    """Every decoder layer of a built PonderLM recomputed in the backward.

    The layer's class is swapped, not its instance forward wrapped: a
    RecomputedTransformerLayer adds no state (no __init__, no parameter, the same
    state_dict), and compile_layers compiles the class's forward, so the checkpoint is
    traced with the layer exactly as when the spec built the layers with this class."""
    for layer in model.decoder.decoder.layers:
        if type(layer) is RecomputedTransformerLayer:
            continue
        if type(layer) is not TransformerLayer:  # a subclass could have its own forward
            raise TypeError(f"cannot recompute a {type(layer).__name__}: expected megatron's "
                            "TransformerLayer")
        layer.__class__ = RecomputedTransformerLayer


def recompute_each_pass(model: torch.nn.Module) -> None:
    """Each pass's block stack of a built PonderLM recomputed in the backward."""
    model.decoder.recompute_passes = True
