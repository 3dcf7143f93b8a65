"""The decoder layer: a megatron-core GPT layer spec with our core attention.

Two specs, the same parameters: megatron-core's local one (torch modules; on CPU, and with
train.compile fused by torch.compile), and on CUDA, when Transformer Engine imports, its TE
spec: RMSNorm fused into the QKV and fc1 GEMMs, TE's SwiGLU and TE's fused RoPE
(`fused_kernels`, chosen by the trainer). Both store checkpoints under the same keys
(megatron maps the local norms onto the TE names), so a run moves between them.
"""

from __future__ import annotations

from functools import partial

import torch
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec, get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.tensor_parallel import RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_ponder.model.core_attention import SoftMaskCoreAttention
from megatron_ponder.model.swiglu import SwiGLU


class GroupedRowParallelLinear(RowParallelLinear):
    """megatron-core 0.16's RowParallelLinear, handing its matmul its own TP group.

    The stock one passes tp_group=None, so the matmul looks the group up and, on rank 0,
    raises a DeprecationWarning on every call: Python that torch.compile cannot trace (a
    graph break in the middle of every layer). A row-parallel matmul never uses the group
    (no sequence parallelism, no dgrad all-reduce inside it); only the warning goes away.
    """

    def _forward_impl(self, input, weight, *args, **kwargs):
        kwargs["tp_group"] = self.tp_group
        return super()._forward_impl(input, weight, *args, **kwargs)


def fused_kernels_available(device: torch.device) -> bool:
    """Transformer Engine's fused kernels are used on CUDA whenever TE imports (a TE recent
    enough for megatron's TE SwiGLU op, 1.13+)."""
    if device.type != "cuda":
        return False
    try:
        # defer: transformer_engine, only on CUDA (its import fails without it)
        from megatron.core.extensions.transformer_engine import TEActivationOp
    except ImportError:
        return False
    return TEActivationOp is not None


def ponder_layer_spec(attention_backend: str, sequence_parallel: bool = False,
                      fused_kernels: bool = False, qk_norm: bool = False) -> ModuleSpec:
    """RMSNorm, SwiGLU MLP, Column/RowParallel linears; core attention is ours, and on the
    local spec the SwiGLU activation too (model/swiglu.py keeps less for the backward than
    megatron's). Sequence parallelism takes Transformer Engine's norms (the torch ones refuse
    it). fused_kernels: TE's spec (the transformer config must enable TE's RoPE fusion too:
    model/transformer_config.py). qk_norm: megatron's qk_layernorm, an RMSNorm over each query
    and key head before RoPE (Qwen3), TE's norm on the TE spec. Recomputation is applied to the
    built layers, on either spec (model/transforms.py)."""
    if fused_kernels:
        spec = get_gpt_layer_with_transformer_engine_spec(use_te_activation_func=True,
                                                          qk_layernorm=qk_norm)
    else:
        spec = get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=qk_norm)
        spec.submodules.self_attention.submodules.linear_proj = GroupedRowParallelLinear
        spec.submodules.mlp.submodules.linear_fc2 = GroupedRowParallelLinear
        spec.submodules.mlp.submodules.activation_func = SwiGLU
    if sequence_parallel and not fused_kernels:
        # defer: transformer_engine, only when sequence parallelism needs its norms
        from megatron.core.extensions.transformer_engine import TENorm

        spec.submodules.input_layernorm = TENorm
        spec.submodules.pre_mlp_layernorm = TENorm
        if qk_norm:  # torch's norm refuses a sequence-parallel config, even over heads
            spec.submodules.self_attention.submodules.q_layernorm = TENorm
            spec.submodules.self_attention.submodules.k_layernorm = TENorm
    # SelfAttention calls this builder directly (not through build_module): a partial.
    spec.submodules.self_attention.submodules.core_attention = partial(
        SoftMaskCoreAttention, backend=attention_backend
    )
    return spec


def final_norm_module(spec: ModuleSpec, fused_kernels: bool):
    """The final RMSNorm's module: the layers' own norm, or TE's where the TE spec fuses the
    layers' norms into their GEMMs (its input_layernorm is an identity)."""
    if fused_kernels:
        # defer: transformer_engine, only on its fused spec
        from megatron.core.extensions.transformer_engine import TENorm

        return TENorm
    return spec.submodules.input_layernorm
