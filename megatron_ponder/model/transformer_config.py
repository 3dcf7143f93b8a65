"""Our ModelConfig -> megatron-core's TransformerConfig, with PonderLM-2's initialisation."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from megatron.core.transformer import TransformerConfig

from megatron_ponder.config import Config


def truncated_normal_init(std: float):
    """PonderLM-2 init: truncated normal with the given std, cut at +-3 std."""
    return partial(torch.nn.init.trunc_normal_, mean=0.0, std=std, a=-3 * std, b=3 * std)


def to_transformer_config(cfg: Config, params_dtype: torch.dtype = torch.float32) -> TransformerConfig:
    m = cfg.model
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.kv_heads,
        ffn_hidden_size=m.ffn_size,
        kv_channels=m.hidden_size // m.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,  # SwiGLU
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        sequence_parallel=False,
        tensor_model_parallel_size=cfg.parallel.tensor_model_parallel_size,
        # Build full master weights and slice them, so every layout starts from one model.
        use_cpu_initialization=True,
        perform_initialization=True,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        init_method=truncated_normal_init(m.std),
        # PonderLM-2: output projections of attention and MLP scaled by 1/sqrt(2 layers).
        output_layer_init_method=truncated_normal_init(m.std / math.sqrt(2 * m.num_layers)),
    )
