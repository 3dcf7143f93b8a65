"""`train.compile`: the decoder layers under torch.compile (inductor), on CPU and GPU.

Regional compilation: the layer class's forward is compiled once and every layer calls it
with itself as an argument. dynamo lifts the parameters into graph inputs, so one graph
serves every layer of every pass, and compile time does not grow with depth.

The slot dimension is marked dynamic on every call (hidden states, the soft-mask bias,
the RoPE angles), so the first compilation serves every pass length L, 2L, ..., (K+1)L and
every Jacobi count. Left to dynamo's automatic dynamism, the second length would recompile,
and duck sizing would tie the slot count to an equal static size (S = H happens: L 128,
K >= 1, H 256 at the first growth pass) and specialise it. What does make a new graph: the
bias being absent (pass 0, the fixed-step methods) or present, and autograd on or off
(training; evaluation and the truncated passes of ponder.grad_passes): at most four.

Inside the compiled region: the norms, RoPE, the linears, SwiGLU and the soft-mask core
attention (`augmented` and `reference` are plain SDPA calls; `flex` compiles its own kernel
and stays outside, attention/flex.py). Because the layer's own forward is what is compiled,
activation recomputation composes either way round: a checkpoint inside the layer is traced
with it, a checkpoint around the stack re-runs the compiled layers.

Only the trainer compiles: inference builds its models uncompiled (decoding hands the layers
a KV-cache step object instead of a bias tensor).
"""

from __future__ import annotations

import functools

import torch


def compile_layers(model: torch.nn.Module) -> None:
    """Run every decoder layer of a PonderLM through one compiled forward per layer class
    (parameters and state_dict keys unchanged, so checkpoints do not notice)."""
    for layer in model.decoder.decoder.layers:
        layer.forward = functools.partial(_forward_with_dynamic_slots, _compiled(type(layer)), layer)


@functools.cache
def _compiled(layer_class: type):
    return torch.compile(layer_class.forward)


def _forward_with_dynamic_slots(compiled_forward, layer, *args, **kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    torch._dynamo.maybe_mark_dynamic(hidden, 0)  # [S, B, H]
    for name, dim in (("attention_mask", 1), ("rotary_pos_emb", 0)):  # [B, S], [S, 1, 1, D]
        if torch.is_tensor(kwargs.get(name)):
            torch._dynamo.maybe_mark_dynamic(kwargs[name], dim)
    return compiled_forward(layer, *args, **kwargs)
