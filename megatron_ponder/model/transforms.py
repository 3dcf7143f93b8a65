"""Model transforms: what training changes on a BUILT PonderLM, applied by one function in
one visible order (as torchtitan parallelises a model after its build). The rest of model/
builds the decoder from model.* and ponder.* alone and reads no train.* field.

The order, and why:
1. Activation recomputation (train.recompute, model/recompute.py). "layers" turns every
   decoder layer into a RecomputedTransformerLayer (its forward holds the checkpoint);
   "passes" makes the decoder wrap each pass's stack call in one.
2. torch.compile of the decoder layers (train.compile, model/compile.py), unless the layers
   are Transformer Engine's fused ones (their kernels are fused already). Compilation
   compiles each layer's *class* forward, so it must come after step 1: a recomputed
   layer's checkpoint is then traced inside its compiled forward (two more graphs, one
   compiled function per layer class), and a recomputed pass re-runs the compiled layers.
   Compiled first, the layers would keep TransformerLayer's compiled forward and
   "layers" would recompute nothing.

Applied once, after the build and the move to the device, before an engine wraps the model
(DDP and ZeRO hook the parameters, which no transform changes: state_dict keys stay).
Inference builds its models untransformed: it runs without autograd, where recomputation
does nothing, and decoding hands the layers a KV-cache step that compilation does not take.
"""

from __future__ import annotations

import torch

from megatron_ponder.config import Recompute, TrainConfig
from megatron_ponder.model.compile import compile_layers
from megatron_ponder.model.recompute import recompute_each_layer, recompute_each_pass


def apply_transforms(model: torch.nn.Module, train: TrainConfig,
                     fused_kernels: bool = False) -> torch.nn.Module:
    """train.recompute, then train.compile, applied to a built PonderLM (in place; returned
    for chaining). fused_kernels: the model was built with Transformer Engine's spec."""
    if train.recompute == Recompute.LAYERS:
        recompute_each_layer(model)
    elif train.recompute == Recompute.PASSES:
        recompute_each_pass(model)
    if train.compile and not fused_kernels:
        compile_layers(model)
    return model
