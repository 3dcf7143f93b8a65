"""The decoder every method shares, implementing the `Backbone` protocol on megatron-core.

Vocabulary-parallel embedding and LM head (untied), a TransformerBlock from our layer
spec, a final RMSNorm, RoPE from explicit position ids, and the method's own small
parameters (PonderLM-3's router, Pause's pause vector), replicated across TP ranks.
With pipeline parallelism each stage builds only what it runs: its share of the layers, plus
the embedding and pause vector on the first stage and the final norm, LM head and router on
the last (the head is untied, so no weight is shared between stages).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region, gather_from_sequence_parallel_region,
    reduce_from_tensor_model_parallel_region, scatter_to_sequence_parallel_region,
)
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.transformer_block import TransformerBlock
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import build_module
from torch import nn

from megatron_ponder.config import Config
from megatron_ponder.model.recompute import recomputed, should_recompute
from megatron_ponder.model.rope import RotaryTable
from megatron_ponder.model.spec import final_norm_module, ponder_layer_spec
from megatron_ponder.ponder import get_method
from megatron_ponder.ponder.router import Router


class PonderDecoder(MegatronModule):
    def __init__(self, cfg: Config, config: TransformerConfig, fused_kernels: bool = False):
        super().__init__(config=config)
        m, p = cfg.model, cfg.ponder
        method = get_method(p)
        self.tp_group = parallel_state.get_tensor_model_parallel_group()
        self.is_first_stage = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
        self.is_last_stage = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        self.hidden_size = m.hidden_size
        self.local_vocab_size = m.vocab_size // cfg.parallel.tensor_model_parallel_size
        # PonderLM-2: sqrt(2.5 H) puts token embeddings (std sqrt(2/(5H))) at RMS 1, the
        # scale of the final-norm outputs that latent slots feed back in (model.embedding_scale).
        self.embedding_scale = m.embed_scale
        self.embedding = self.pause_embedding = None
        if self.is_first_stage:
            self.embedding = tensor_parallel.VocabParallelEmbedding(
                m.vocab_size, m.hidden_size, init_method=config.init_method, config=config,
                tp_group=self.tp_group,
            )
            if method.uses_pause:
                self.pause_embedding = nn.Parameter(torch.empty(m.hidden_size))
        self.sequence_parallel = cfg.parallel.sequence_parallel
        # Each pass's stack recomputed in the backward: switched on after the build, by
        # model/transforms.py (train.recompute=passes).
        self.recompute_passes = False
        spec = ponder_layer_spec(p.attention_backend, self.sequence_parallel, fused_kernels,
                                 qk_norm=m.qk_norm)
        self.decoder = TransformerBlock(
            config, spec, post_layer_norm=False,
            pg_collection=ProcessGroupCollection.use_mpu_process_groups(),
        )
        self.final_layernorm = self.output_layer = self.router = None
        if self.is_last_stage:
            # The final norm and the head run after the stack's output is gathered: they see
            # whole sequences, also under sequence parallelism, so every TP rank's gradient of
            # their weights is already complete. Built sequence-parallel, the norm's weight
            # would be marked for the TP all-reduce of partial gradients and summed TP times.
            whole_sequence = dataclasses.replace(config, sequence_parallel=False)
            self.final_layernorm = build_module(
                final_norm_module(spec, fused_kernels), config=whole_sequence,
                hidden_size=m.hidden_size, eps=m.norm_eps,
            )
            self.output_layer = tensor_parallel.ColumnParallelLinear(
                m.hidden_size, m.vocab_size, config=whole_sequence, init_method=config.init_method,
                bias=False, gather_output=False, tp_group=self.tp_group,
            )
            if method.uses_router:
                self.router = Router(m.hidden_size, method.k, p.router)
        self.rotary = RotaryTable(m)

    # ----------------------------------------------------------------- Backbone protocol

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        # Looked up sequence-first, the result is contiguous like every other stack input
        # (a transposed view would make a compiled layer guard on another stride).
        return self.embedding(tokens.t()) * self.embedding_scale

    def run(self, inputs, position_ids, key_log_w=None, final_norm=True):
        if key_log_w is not None:
            # Each TP rank's heads see the same bias: its gradient is a partial sum per
            # rank, all-reduced by this op's backward.
            key_log_w = copy_to_tensor_model_parallel_region(key_log_w, self.tp_group)
        if self.sequence_parallel:  # the slot operations outside the stack see whole sequences
            inputs = scatter_to_sequence_parallel_region(inputs, group=self.tp_group)
        stack = functools.partial(self.decoder, hidden_states=inputs, attention_mask=key_log_w,
                                  rotary_pos_emb=self.rotary(position_ids))
        hidden = recomputed(stack) if self.recompute_passes and should_recompute(self) else stack()
        if self.sequence_parallel:
            # Downstream every TP rank computes the same full gradient (replicated norm and
            # router, the head's input all-reduced): backward keeps this rank's chunk.
            hidden = gather_from_sequence_parallel_region(
                hidden, tensor_parallel_output_grad=False, group=self.tp_group)
        return self.final_layernorm(hidden) if final_norm else hidden

    def run_cached(self, inputs, position_ids, cache_step, final_norm=True):
        """One pass of new slots through the stack, attending via `cache_step` (a slot KV
        cache step, inference/kv_cache.py). inputs [S, b, H]; position_ids [S] or [S, b]."""
        angles = self.rotary(position_ids.reshape(-1)).reshape(*position_ids.shape, 1, -1)
        if position_ids.dim() == 1:
            angles = angles[:, None]
        hidden = self.decoder(hidden_states=inputs, attention_mask=cache_step, rotary_pos_emb=angles)
        return self.final_layernorm(hidden) if final_norm else hidden

    def final_norm(self, hidden):
        return self.final_layernorm(hidden)

    def lm_logits(self, hidden):
        return self.output_layer(hidden)[0]

    def expected_embedding(self, logits):
        """s softmax(logits) @ E (s the embedding scale), the softmax over the TP-sharded vocabulary."""
        logits = logits.float()
        shift = logits.detach().max(dim=-1, keepdim=True).values
        if dist.get_world_size(self.tp_group) > 1:
            dist.all_reduce(shift, op=dist.ReduceOp.MAX, group=self.tp_group)
        exp = (logits - shift).exp()
        # Forward: all-reduce the partial sums. Backward: each rank's local quotients give
        # a partial gradient of the shared denominator; copy_to's backward sums them.
        denominator = copy_to_tensor_model_parallel_region(
            reduce_from_tensor_model_parallel_region(exp.sum(-1, keepdim=True), self.tp_group),
            self.tp_group,
        )
        local = (exp / denominator).to(self.embedding.weight.dtype) @ self.embedding.weight
        return reduce_from_tensor_model_parallel_region(local, self.tp_group) * self.embedding_scale

    def route(self, h0):
        return self.router(h0)

    def pause_inputs(self, like):
        return (self.pause_embedding * self.embedding_scale).to(like.dtype).expand_as(like)

    def cross_entropy(self, logits, labels):
        """Per-token loss [B, L]. Consumes `logits`: megatron's fused cross-entropy works in
        place (max subtracted, then exp) on its input, which is `logits` itself when they are
        already fp32 (no copy: no extra logits-sized tensor in fp32 training). Compute it once
        per output; read nothing from the logits afterwards."""
        return tensor_parallel.vocab_parallel_cross_entropy(
            logits.float(), labels.transpose(0, 1).contiguous()
        ).transpose(0, 1)
