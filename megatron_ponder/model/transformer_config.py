"""Our ModelConfig -> megatron-core's TransformerConfig (initial values: model/init.py)."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from megatron.core.transformer import TransformerConfig

from megatron_ponder.config import Config
from megatron_ponder.model.rope import softmax_scale


def _filled_by_init_py(tensor: torch.Tensor) -> torch.Tensor:
    """megatron's per-layer init hook: a no-op, model/init.py draws every value."""
    return tensor


def to_transformer_config(cfg: Config, params_dtype: torch.dtype = torch.float32,
                          fused_kernels: bool = False) -> TransformerConfig:
    """fused_kernels: Transformer Engine's fused RoPE (with its layer spec)."""
    m = cfg.model
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.kv_heads,
        ffn_hidden_size=m.ffn_size,
        kv_channels=m.head_size,
        softmax_scale=softmax_scale(m),  # YaRN's attention factor (model/rope.py)
        # RMSNorm over each query / key head (model/spec.py builds the norms): megatron's
        # finalize_model_grads reads this to sum their gradients over the TP ranks.
        qk_layernorm=m.qk_norm,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,  # SwiGLU
        activation_func=F.silu,
        # The MLP applies the spec's activation module to the whole fc1 output: TE's SwiGLU
        # (fused_kernels) or model/swiglu.py; despite its name the hook needs no TE.
        use_te_activation_func=True,
        add_bias_linear=False,
        add_qkv_bias=m.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        # TE's fused RoPE takes our per-slot angle table [S, 1, 1, D] as megatron's does.
        apply_rope_fusion=fused_kernels,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        sequence_parallel=cfg.parallel.sequence_parallel,
        tensor_model_parallel_size=cfg.parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=cfg.parallel.pipeline_model_parallel_size,
        # megatron's init path runs for the tensor-parallel attributes it sets on the
        # weights; the values come from model/init.py, the same way at every layout.
        use_cpu_initialization=True,
        perform_initialization=True,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        init_method=_filled_by_init_py,
        output_layer_init_method=_filled_by_init_py,
    )
