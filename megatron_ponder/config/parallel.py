"""parallel: how the model is split over ranks and what runs data parallelism, and whether
the model splits that way."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_ponder.config.checks import MAX_TIMEOUT_S, require
from megatron_ponder.config.choices import Engine
from megatron_ponder.config.model import ModelConfig


@dataclass
class ParallelConfig:
    tensor_model_parallel_size: int = 1
    # Shard the residual stream's sequence dimension over the TP ranks between the attention
    # and MLP blocks (activation memory / TP); GPU with Transformer Engine only.
    sequence_parallel: bool = False
    # Stages of the multi-pass pipeline (megatron_ponder/parallel/pipeline.py).
    pipeline_model_parallel_size: int = 1
    # A collective or pipeline message that waits longer than this ends the job (a dead or
    # stuck rank), instead of hanging until the cluster's time limit.
    distributed_timeout_s: float = 600.0
    # Data parallelism over world / TP ranks: "megatron" (megatron-core DDP + distributed
    # optimizer, GPU or CPU) or "deepspeed" (ZeRO stage zero_stage).
    engine: Engine = Engine.MEGATRON
    # With engine "megatron" at data-parallel size 1: still run megatron-core's DDP and
    # distributed optimizer instead of the plain engine (checks that path on one device).
    force_megatron_engine: bool = False
    # DeepSpeed ZeRO stage 1-3 (optimizer states / + gradients / + parameters partitioned);
    # must stay 0 with engine "megatron", whose distributed optimizer is its ZeRO-1.
    zero_stage: int = 0

    @property
    def uses_zero(self) -> bool:
        """DeepSpeed ZeRO steps the model (it takes gradients in its backward hooks)."""
        return self.engine == Engine.DEEPSPEED

    def validate(self, model: ModelConfig, seq_length: int) -> None:
        """The layout, and whether the model (and data.seq_length, with sequence parallelism)
        splits over it."""
        self._validate_tensor_split(model, seq_length)
        self._validate_pipeline_split(model)
        require(0 < self.distributed_timeout_s <= MAX_TIMEOUT_S, "parallel.distributed_timeout_s",
                self.distributed_timeout_s, f"must be > 0 and <= {MAX_TIMEOUT_S:g} seconds")
        self._validate_engine()
        # The q/k norms' gradients are completed over TP after the backward (parallel/grads.py),
        # too late for ZeRO, which takes gradients in its backward hooks.
        require(not (model.qk_norm and self.tensor_model_parallel_size > 1 and self.uses_zero),
                "model.qk_norm", True,
                "with parallel.tensor_model_parallel_size > 1 needs parallel.engine=megatron "
                "(DeepSpeed's ZeRO would take the q/k norms' gradients before their TP sum)")

    def _validate_tensor_split(self, m: ModelConfig, seq_length: int) -> None:
        tp = self.tensor_model_parallel_size
        require(tp >= 1, "parallel.tensor_model_parallel_size", tp, "must be >= 1")
        for name, size in (("num_attention_heads", m.num_attention_heads),
                           ("num_query_groups", m.kv_heads), ("vocab_size", m.vocab_size),
                           ("ffn_hidden_size", m.ffn_size)):
            require(size % tp == 0, f"model.{name}", size,
                    f"must be divisible by parallel.tensor_model_parallel_size={tp}")
        if self.sequence_parallel:
            require(tp > 1, "parallel.sequence_parallel", True,
                    "needs parallel.tensor_model_parallel_size > 1 (it shards over the TP ranks)")
            require(seq_length % tp == 0, "data.seq_length", seq_length,
                    f"must be divisible by parallel.tensor_model_parallel_size={tp} with "
                    "parallel.sequence_parallel")

    def _validate_pipeline_split(self, m: ModelConfig) -> None:
        pp = self.pipeline_model_parallel_size
        require(pp >= 1, "parallel.pipeline_model_parallel_size", pp, "must be >= 1")
        require(m.num_layers % pp == 0, "model.num_layers", m.num_layers,
                f"must be divisible by parallel.pipeline_model_parallel_size={pp}")

    def _validate_engine(self) -> None:
        require(self.engine in Engine.values(), "parallel.engine", self.engine,
                Engine.valid_values())
        if self.uses_zero:
            self._validate_zero()
        else:
            require(self.zero_stage == 0, "parallel.zero_stage", self.zero_stage,
                    "ZeRO stages need parallel.engine=deepspeed; with parallel.engine=megatron it"
                    " must be 0 (its distributed optimizer shards the optimizer state)")

    def _validate_zero(self) -> None:
        require(self.zero_stage in (1, 2, 3), "parallel.zero_stage", self.zero_stage,
                "must be 1, 2 or 3 with parallel.engine=deepspeed (for plain data parallelism"
                " use parallel.engine=megatron)")
        require(not self.force_megatron_engine, "parallel.force_megatron_engine", True,
                "forces the megatron engine, so it needs parallel.engine=megatron, not"
                " deepspeed")
        # ZeRO-2/3 take the gradients in their backward hooks, before the pipeline's
        # schedule or the sequence-parallel norm reduction could complete them.
        require(self.pipeline_model_parallel_size == 1, "parallel.pipeline_model_parallel_size",
                self.pipeline_model_parallel_size,
                "must be 1 with parallel.engine=deepspeed (pipeline parallelism runs with"
                " parallel.engine=megatron)")
        require(not self.sequence_parallel, "parallel.sequence_parallel", True,
                "is not supported with parallel.engine=deepspeed; use parallel.engine=megatron")
