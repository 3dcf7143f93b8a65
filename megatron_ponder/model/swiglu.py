"""The SwiGLU MLP, keeping for the backward only what its gradient needs.

megatron-core's unfused gated MLP computes silu(gate) * (up + glu_linear_offset): autograd keeps
the fc1 output [gate; up] (as views), silu(gate) and the FFN-wide sum up + 0.0 that the zero
offset creates (measured: docs/megatron-and-deepspeed-on-cpu.md); its fused alternative is
torch.compile'd. Here one autograd function keeps only the fc1 output and recomputes
silu(gate) in the backward (an elementwise op): 2 of the 4 FFN-wide tensors per slot and layer. Its backward runs the ops autograd would run on
silu(gate) * up, in the same order, so the gradients are bit for bit the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fc1_out: torch.Tensor) -> torch.Tensor:
        gate, up = fc1_out.chunk(2, dim=-1)
        ctx.save_for_backward(fc1_out)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (fc1_out,) = ctx.saved_tensors
        gate, up = fc1_out.chunk(2, dim=-1)
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return torch.cat([grad_gate, grad * F.silu(gate)], dim=-1)


class SwiGLU(MegatronModule):
    """silu(gate) * up of megatron's fc1 output [gate; up] (last dimension). megatron's MLP
    applies `submodules.activation_func` to the whole fc1 output when the config's
    use_te_activation_func is set: the hook Transformer Engine's fused activations use."""

    def forward(self, fc1_out: torch.Tensor) -> torch.Tensor:
        return _SwiGLU.apply(fc1_out)
