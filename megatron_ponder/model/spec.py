"""The decoder layer: megatron-core's local GPT layer spec with our core attention."""

from __future__ import annotations

from functools import partial

from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.tensor_parallel import RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_ponder.model.core_attention import SoftMaskCoreAttention


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


def ponder_layer_spec(attention_backend: str, sequence_parallel: bool = False) -> ModuleSpec:
    """RMSNorm, SwiGLU MLP, Column/RowParallel linears; only core_attention is ours.
    Sequence parallelism takes Transformer Engine's norms (the torch ones refuse it)."""
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.linear_proj = GroupedRowParallelLinear
    spec.submodules.mlp.submodules.linear_fc2 = GroupedRowParallelLinear
    if sequence_parallel:
        from megatron.core.extensions.transformer_engine import TENorm

        spec.submodules.input_layernorm = TENorm
        spec.submodules.pre_mlp_layernorm = TENorm
    # SelfAttention calls this builder directly (not through build_module): a partial.
    spec.submodules.self_attention.submodules.core_attention = partial(
        SoftMaskCoreAttention, backend=attention_backend
    )
    return spec
