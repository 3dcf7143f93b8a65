"""The decoder layer: megatron-core's local GPT layer spec with our core attention."""

from __future__ import annotations

from functools import partial

from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_ponder.model.core_attention import SoftMaskCoreAttention


def ponder_layer_spec(attention_backend: str, sequence_parallel: bool = False) -> ModuleSpec:
    """RMSNorm, SwiGLU MLP, Column/RowParallel linears; only core_attention is ours.
    Sequence parallelism takes Transformer Engine's norms (the torch ones refuse it)."""
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if sequence_parallel:
        from megatron.core.extensions.transformer_engine import TENorm

        spec.submodules.input_layernorm = TENorm
        spec.submodules.pre_mlp_layernorm = TENorm
    # SelfAttention calls this builder directly (not through build_module): a partial.
    spec.submodules.self_attention.submodules.core_attention = partial(
        SoftMaskCoreAttention, backend=attention_backend
    )
    return spec
