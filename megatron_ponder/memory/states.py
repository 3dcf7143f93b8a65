"""Bytes of parameters, gradients and optimizer state on one rank, per engine.

Parameters are fp32 in every engine (bf16 is the trainer's autocast), gradients fp32, AdamW
keeps exp_avg and exp_avg_sq in fp32 (docs/decisions.md, "Data parallelism"). Sharding:
- megatron engine, one data-parallel rank: nothing is sharded.
- megatron engine with DP > 1 (GPU or CPU): the distributed optimizer shards the AdamW state over
  the DP ranks; gradients live in its fp32 buffer (grad_reduce_in_fp32), parameters stay whole.
  With fp32 parameters its master weights are views of the parameters (no copy).
- DeepSpeed ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models", section 5): stage 1 shards the optimizer state, 2 also the gradients,
  3 also the parameters. DeepSpeed keeps its own fp32 copy of each rank's parameter partition
  (`single_partition_of_fp32_groups` in stage 1/2, `fp32_partitioned_groups_flat` in stage 3)
  even when the model is fp32, and reduces gradients through a bucket of `reduce_bucket_size`
  elements (default 5e8, DeepSpeed's config documentation), which ZeRO-2/3 allocate in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_ponder.config import Config
from megatron_ponder.ponder import RouterKind, get_method

FP32 = 4
ADAM_STATES = 2  # exp_avg, exp_avg_sq
DEEPSPEED_REDUCE_BUCKET = 500_000_000  # elements: DeepSpeed's default reduce_bucket_size


@dataclass(frozen=True)
class StageParams:
    """Parameters one rank holds on pipeline stage `stage` (its TP shard of each)."""

    matrices: int  # 2-D weights run through the linears (cast to bf16 by autocast)
    other: int  # embeddings, norms, biases, the pause vector
    head: int = 0  # of those, the last stage's LM head, final norm and router: the weights
    # whose gradients the backward creates first

    @property
    def total(self) -> int:
        return self.matrices + self.other


def stage_params(cfg: Config, stage: int) -> StageParams:
    """Counted from model/decoder.py and megatron's layers: per layer QKV h (n + 2g) d (and its
    bias (n + 2g) d with model.qkv_bias), the output projection n d h, SwiGLU fc1 h 2f and
    fc2 f h (n, g, f: this rank's share), two RMSNorm weights h (and the q/k norms 2 d with
    model.qk_norm, replicated); the first stage adds the embedding (v h, this rank's
    vocabulary rows) and Pause's vector, the last the final norm, the LM head (v h) and PonderLM-3's router."""
    m, p, par = cfg.model, cfg.ponder, cfg.parallel
    method = get_method(p)
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    h, d = m.hidden_size, m.head_size
    n, g, f, v = m.num_attention_heads // tp, m.kv_heads // tp, m.ffn_size // tp, m.vocab_size // tp
    layers = m.num_layers // pp
    matrices = layers * (h * (n + 2 * g) * d + n * d * h + 3 * h * f)
    other = layers * (2 * h + ((n + 2 * g) * d if m.qkv_bias else 0) + (2 * d if m.qk_norm else 0))
    if stage == 0:
        other += v * h + (h if method.uses_pause else 0)
    head = 0
    if stage == pp - 1:
        head = v * h + h
        if method.uses_router:  # replicated on every TP rank; biases are vectors
            router_hidden = h if RouterKind(p.router) is RouterKind.MLP else 0
            outputs = method.k + 1
            head += h * router_hidden + (router_hidden or h) * outputs + router_hidden + outputs
        matrices += v * h
        other += h
        if method.uses_router:
            matrices += h * router_hidden + (router_hidden or h) * outputs
            other += router_hidden + outputs
    return StageParams(matrices, other, head)


@dataclass(frozen=True)
class StateBytes:
    params: int
    grads: int
    optimizer: int


def state_bytes(cfg: Config, params: int, dp: int) -> StateBytes:
    """Bytes of a rank's parameters, gradients and optimizer state for `params` parameters,
    with `dp` data-parallel ranks (see the module docstring for each engine)."""
    par = cfg.parallel
    adam = ADAM_STATES * FP32 * params
    if par.uses_zero:
        stage = par.zero_stage
        bucket = min(DEEPSPEED_REDUCE_BUCKET, params) * FP32 if stage >= 2 else 0
        partition = -(-params // dp)
        return StateBytes(
            params=FP32 * (partition if stage == 3 else params),
            grads=FP32 * (partition if stage >= 2 else params) + bucket,
            optimizer=(ADAM_STATES + 1) * FP32 * partition,  # moments + the fp32 partition
        )
    # megatron's distributed optimizer (the AdamW state of a DP rank's shard)
    return StateBytes(params=FP32 * params, grads=FP32 * params, optimizer=-(-adam // dp))
