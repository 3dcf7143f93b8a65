"""Typed configuration: small dataclasses, YAML in, dotted overrides, early validation.

Every check here runs before a single tensor is allocated, and every error names the
field (as a dotted path) and what would be valid.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from megatron_ponder.attention.registry import ATTENTION_BACKENDS
from megatron_ponder.ponder import METHODS, LatentInit, RouterKind, method_class

LATENT_INITS = tuple(LatentInit)
ROUTERS = tuple(RouterKind)
PRECISIONS = ("auto", "fp32", "bf16")
RECOMPUTE = ("none", "layers", "passes")
WANDB_MODES = ("offline", "online", "disabled")
ENGINES = ("megatron", "deepspeed")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the valid values."""


@dataclass
class ModelConfig:
    """The decoder shared by every method (same parameters for honest comparisons)."""

    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_attention_heads: int = 4
    # Grouped-query attention: number of key/value heads; None means one per query head.
    num_query_groups: int | None = None
    # None -> the LLaMA SwiGLU size: 8/3 H rounded up to a multiple of 64.
    ffn_hidden_size: int | None = None
    # Length of the RoPE position table: the longest sequence (in tokens, not slots).
    max_position_embeddings: int = 256
    rotary_base: float = 10000.0
    norm_eps: float = 1e-5
    # None -> PonderLM-2's sqrt(2 / (5 H)).
    init_std: float | None = None
    # Biases on the query, key and value projections (Qwen2); no other linear has one.
    qkv_bias: bool = False
    # Token embeddings are multiplied by this; None -> PonderLM-2's sqrt(2.5 H). Imported
    # Llama-family checkpoints use 1.0, their own (docs/decisions.md, "Bring your own model").
    embedding_scale: float | None = None
    # Size of one attention head (megatron's kv_channels); None -> hidden_size / heads.
    # Qwen3 and Mistral-Nemo set it apart from the hidden size.
    head_dim: int | None = None
    # RMSNorm over each query and key head before RoPE (Qwen3; megatron's qk_layernorm).
    qk_norm: bool = False
    # RoPE frequency scaling (model/rope.py): None (plain RoPE), "linear" (every frequency
    # divided by rope_scaling_factor), "llama3" (Llama 3.1's wavelength-dependent scaling,
    # which also reads the three fields below) or "yarn" (YaRN: factor, original context and
    # the three yarn fields). A field the scaling does not read stays null.
    rope_scaling: str | None = None
    rope_scaling_factor: float | None = None
    rope_low_freq_factor: float | None = None
    rope_high_freq_factor: float | None = None
    # The context the unscaled model was trained on (Hugging Face's
    # original_max_position_embeddings): wavelengths are compared against it.
    rope_original_max_positions: int | None = None
    # "yarn" (with factor and original context): the rotation counts bounding its ramp from
    # interpolated to kept frequencies, and the factor on cos and sin (the attention logits
    # scale by its square).
    rope_beta_fast: float | None = None
    rope_beta_slow: float | None = None
    rope_attention_factor: float | None = None

    @property
    def head_size(self) -> int:
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        return 64 * math.ceil(8 * self.hidden_size / 3 / 64)

    @property
    def kv_heads(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def std(self) -> float:
        return self.init_std if self.init_std is not None else math.sqrt(2 / (5 * self.hidden_size))

    @property
    def embed_scale(self) -> float:
        if self.embedding_scale is not None:
            return self.embedding_scale
        return math.sqrt(2.5 * self.hidden_size)


@dataclass
class PonderConfig:
    """The method switch and its knobs (method.md sections 3-5)."""

    method: str = "ponderlm3"
    # K: latent steps (fixed for ponderlm2/pause/loop/ponderlm1, the maximum for ponderlm3).
    k: int = 3
    # Hard-pruning threshold on the tail probability w at inference.
    tau: float = 1e-4
    # Training draws J uniformly from these per (seed, step); evaluation uses jacobi_eval.
    jacobi_train: list[int] = field(default_factory=lambda: [2, 3])
    jacobi_eval: int = 3
    # lambda of the optional compute penalty lambda * mean_t sum_{k>=1} w_{t,k}.
    compute_penalty: float = 0.0
    # Decisive router (docs/decisions.md): weight mu of a term pushing every latent step with
    # w < decisive_threshold below tau at a rate that does not vanish as w shrinks; 0 = off.
    decisive_weight: float = 0.0
    decisive_threshold: float = 0.05
    attention_backend: str = "augmented"
    # 0: gradients through every pass; n > 0: only the last n passes keep gradients.
    grad_passes: int = 0
    # "growth": PonderLM-2's growth passes; "copy": every latent input starts as h^(0).
    latent_init: str = "growth"
    router: str = "linear"


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
    engine: str = "megatron"
    # With engine "megatron" at data-parallel size 1: still run megatron-core's DDP and
    # distributed optimizer instead of the plain engine (checks that path on one device).
    force_megatron_engine: bool = False
    # DeepSpeed ZeRO stage 1-3 (optimizer states / + gradients / + parameters partitioned);
    # must stay 0 with engine "megatron", whose distributed optimizer is its ZeRO-1.
    zero_stage: int = 0

    @property
    def uses_zero(self) -> bool:
        """DeepSpeed ZeRO steps the model (it takes gradients in its backward hooks)."""
        return self.engine == "deepspeed"


@dataclass
class DataConfig:
    """Token data: megatron indexed datasets (.bin/.idx) read through GPTDataset."""

    # A sentencepiece .model, or a Hugging Face tokenizer folder with tokenizer.json (or that
    # file); the model's vocabulary must hold every id it produces.
    tokenizer: str = ""
    # The end-of-document token appended to every document (its text, e.g. "<|endoftext|>");
    # "" = the tokenizer's EOS. Must be a token of data.tokenizer (checked when it is loaded).
    eod_token: str = ""
    # Path prefixes of indexed datasets (PREFIX.bin / PREFIX.idx), blended by `weights`.
    prefixes: list[str] = field(default_factory=list)
    # Sampling weights of the prefixes (normalised); empty = proportional to their sizes.
    weights: list[float] = field(default_factory=list)
    # Train/valid/test split of every corpus by documents, as megatron's "969,30,1".
    split: str = "969,30,1"
    # Tokens per training sequence (<= model.max_position_embeddings).
    seq_length: int = 128
    # Where GPTDataset's index caches are built once and reused; "" = next to the run.
    cache_dir: str = ""


@dataclass
class TrainConfig:
    """The optimisation and the run around it."""

    output_dir: str = "runs/default"
    steps: int = 100
    micro_batch_size: int = 4
    # Sequences per optimizer step over all data-parallel ranks (gradient accumulation).
    global_batch_size: int = 8
    lr: float = 3e-4
    # Cosine decay to min_lr_ratio * lr after a linear warmup of warmup_fraction * steps.
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.02
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    log_interval: int = 10
    eval_interval: int = 100
    eval_batches: int = 10
    save_interval: int = 100
    keep_checkpoints: int = 3
    # Resume from a checkpoint without manifest.json (its files cannot be checked) in this
    # run; logged in metrics.jsonl. Better: tools/convert_checkpoint.py add-manifest.
    allow_unverified_checkpoint: bool = False
    # Save and exit (code 3) before this much wall time has passed; 0 = no limit.
    max_wall_time_s: float = 0.0
    # Save and exit (code 3) after every step that is a multiple of this; 0 = never.
    exit_interval: int = 0
    # Steps whose loss or gradients are not finite are skipped, up to this many in a row.
    max_nonfinite_skips: int = 3
    # "auto": bf16 autocast on GPU, fp32 on CPU.
    precision: str = "auto"
    # Run the decoder layers under torch.compile (model/compile.py): the first step pays
    # the compilation (minutes on a 2-core CPU), every later step runs fused kernels.
    compile: bool = False
    # Activation recomputation: "none", "layers" (each layer of each pass keeps only its
    # input) or "passes" (each pass keeps only its block stack's input); tools/plan_memory.py.
    recompute: str = "none"
    # Peak FLOP/s per device for MFU; 0 = a table of GPUs, or a measured matmul rate on CPU.
    peak_tflops: float = 0.0


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    # wandb mode: "offline" (default, sync later with `wandb sync`), "online" or "disabled".
    wandb: str = "offline"
    wandb_project: str = "megatron-ponder"
    run_name: str = ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ponder: PonderConfig = field(default_factory=PonderConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 1234

    def validate(self) -> "Config":
        validate(self)
        return self


def _require(ok: bool, name: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {valid}")


def _non_finite_floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted name, value) of every inf or NaN float anywhere in the config: no float
    setting means anything infinite, and a NaN passes every `>` check."""
    found = []
    for f in dataclasses.fields(node):
        value, name = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found += _non_finite_floats(value, name + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((name, value))
        elif isinstance(value, list):
            found += [(f"{name}[{i}]", v) for i, v in enumerate(value)
                      if isinstance(v, float) and not math.isfinite(v)]
    return found


# A seed reaches numpy's RandomState (megatron's dataset shuffles), which takes 32 bits.
MAX_SEED = 2**32 - 1
# About 31 years: any longer overflows the timedelta that torch.distributed takes.
MAX_TIMEOUT_S = 1e9


def validate(cfg: Config) -> None:
    """Check every field that can be checked without tensors; raise ConfigError."""
    for name, value in _non_finite_floats(cfg):
        _require(False, name, value, "must be a finite number")
    _require(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"must be in [0, {MAX_SEED}]")
    m, p, par = cfg.model, cfg.ponder, cfg.parallel
    for name in ("vocab_size", "hidden_size", "num_layers", "num_attention_heads",
                 "max_position_embeddings"):
        _require(getattr(m, name) >= 1, f"model.{name}", getattr(m, name), "must be >= 1")
    if m.head_dim is None:
        _require(m.hidden_size % m.num_attention_heads == 0, "model.hidden_size", m.hidden_size,
                 f"must be divisible by model.num_attention_heads={m.num_attention_heads} "
                 f"(or set model.head_dim)")
    else:  # RoPE rotates pairs of a head's channels
        _require(m.head_dim >= 2 and m.head_dim % 2 == 0, "model.head_dim", m.head_dim,
                 "must be an even number >= 2, or null (hidden_size / num_attention_heads)")
    _require(m.num_attention_heads % m.kv_heads == 0, "model.num_query_groups", m.num_query_groups,
             f"must divide model.num_attention_heads={m.num_attention_heads}")
    _require(m.ffn_size >= 1, "model.ffn_hidden_size", m.ffn_hidden_size, "must be >= 1 or null")
    _require(m.std > 0, "model.init_std", m.init_std, "must be > 0 or null")
    _require(m.norm_eps > 0, "model.norm_eps", m.norm_eps, "must be > 0")
    _require(m.rotary_base > 1, "model.rotary_base", m.rotary_base, "must be > 1")
    _require(m.embed_scale > 0, "model.embedding_scale", m.embedding_scale, "must be > 0 or null")
    _validate_rope_scaling(m)

    _require(p.method in METHODS, "ponder.method", p.method, f"valid values: {', '.join(METHODS)}")
    _require(p.k >= 0, "ponder.k", p.k, "must be >= 0 (number of pondering steps)")
    k_problem = method_class(p.method).k_problem(p.k)
    _require(k_problem is None, "ponder.k", p.k, k_problem)
    _require(0.0 < p.tau < 1.0, "ponder.tau", p.tau, "must lie strictly between 0 and 1")
    _require(len(p.jacobi_train) > 0 and all(j >= 1 for j in p.jacobi_train),
             "ponder.jacobi_train", p.jacobi_train, "must be a non-empty list of integers >= 1")
    _require(p.jacobi_eval >= 1, "ponder.jacobi_eval", p.jacobi_eval, "must be >= 1")
    _require(p.compute_penalty >= 0, "ponder.compute_penalty", p.compute_penalty, "must be >= 0")
    _require(p.decisive_weight >= 0, "ponder.decisive_weight", p.decisive_weight,
             "must be >= 0 (0 = off)")
    _require(0.0 < p.decisive_threshold < 1.0 and (p.decisive_weight == 0 or p.tau < p.decisive_threshold),
             "ponder.decisive_threshold", p.decisive_threshold,
             f"must lie strictly between ponder.tau={p.tau} and 1")
    _require(p.attention_backend in ATTENTION_BACKENDS, "ponder.attention_backend",
             p.attention_backend, f"valid values: {', '.join(ATTENTION_BACKENDS)}")
    _require(p.grad_passes >= 0, "ponder.grad_passes", p.grad_passes,
             "must be >= 0 (0 = gradients through every pass)")
    _require(p.latent_init in LATENT_INITS, "ponder.latent_init", p.latent_init,
             f"valid values: {', '.join(LATENT_INITS)}")
    _require(p.router in ROUTERS, "ponder.router", p.router, f"valid values: {', '.join(ROUTERS)}")

    tp = par.tensor_model_parallel_size
    _require(tp >= 1, "parallel.tensor_model_parallel_size", tp, "must be >= 1")
    _require(m.num_attention_heads % tp == 0, "model.num_attention_heads", m.num_attention_heads,
             f"must be divisible by parallel.tensor_model_parallel_size={tp}")
    _require(m.kv_heads % tp == 0, "model.num_query_groups", m.kv_heads,
             f"must be divisible by parallel.tensor_model_parallel_size={tp}")
    _require(m.vocab_size % tp == 0, "model.vocab_size", m.vocab_size,
             f"must be divisible by parallel.tensor_model_parallel_size={tp}")
    _require(m.ffn_size % tp == 0, "model.ffn_hidden_size", m.ffn_size,
             f"must be divisible by parallel.tensor_model_parallel_size={tp}")
    if par.sequence_parallel:
        _require(tp > 1, "parallel.sequence_parallel", True,
                 "needs parallel.tensor_model_parallel_size > 1 (it shards over the TP ranks)")
        _require(cfg.data.seq_length % tp == 0, "data.seq_length", cfg.data.seq_length,
                 f"must be divisible by parallel.tensor_model_parallel_size={tp} with "
                 "parallel.sequence_parallel")
    pp = par.pipeline_model_parallel_size
    _require(pp >= 1, "parallel.pipeline_model_parallel_size", pp, "must be >= 1")
    _require(m.num_layers % pp == 0, "model.num_layers", m.num_layers,
             f"must be divisible by parallel.pipeline_model_parallel_size={pp}")
    _require(0 < par.distributed_timeout_s <= MAX_TIMEOUT_S, "parallel.distributed_timeout_s",
             par.distributed_timeout_s, f"must be > 0 and <= {MAX_TIMEOUT_S:g} seconds")
    _validate_engine(par)
    # The q/k norms' gradients are completed over TP after the backward (parallel/grads.py),
    # too late for ZeRO, which takes gradients in its backward hooks.
    _require(not (m.qk_norm and tp > 1 and par.uses_zero), "model.qk_norm", True,
             "with parallel.tensor_model_parallel_size > 1 needs parallel.engine=megatron "
             "(DeepSpeed's ZeRO would take the q/k norms' gradients before their TP sum)")
    _validate_run(cfg)


@dataclass(frozen=True)
class RopeScaling:
    """What one model.rope_scaling type reads, and the order its fields must keep."""
    fields: tuple[str, ...]
    larger_than: tuple[tuple[str, str], ...] = ()  # (field, must exceed field)


# RoPE frequency scalings the decoder implements (model/rope.py), as Hugging Face names them.
ROPE_SCALINGS = {
    "linear": RopeScaling(("rope_scaling_factor",)),
    "llama3": RopeScaling(("rope_scaling_factor", "rope_low_freq_factor",
                           "rope_high_freq_factor", "rope_original_max_positions"),
                          (("rope_high_freq_factor", "rope_low_freq_factor"),)),
    "yarn": RopeScaling(("rope_scaling_factor", "rope_original_max_positions", "rope_beta_fast",
                         "rope_beta_slow", "rope_attention_factor"),
                        (("rope_beta_fast", "rope_beta_slow"),)),
}
_PLAIN_ROPE = RopeScaling(())
_ROPE_FIELDS = ("rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_original_max_positions", "rope_beta_fast", "rope_beta_slow",
                "rope_attention_factor")


def _validate_rope_scaling(m: ModelConfig) -> None:
    """A scaling names its type and exactly the fields it reads; a field without the type
    that reads it would silently do nothing, so it is refused."""
    _require(m.rope_scaling is None or m.rope_scaling in ROPE_SCALINGS, "model.rope_scaling",
             m.rope_scaling, f"valid values: null (plain RoPE), {', '.join(ROPE_SCALINGS)}")
    scaling = ROPE_SCALINGS.get(m.rope_scaling, _PLAIN_ROPE)
    used = scaling.fields
    for name in _ROPE_FIELDS:
        value = getattr(m, name)
        if name not in used:
            _require(value is None, f"model.{name}", value,
                     f"must be null with model.rope_scaling={m.rope_scaling!r} (it reads "
                     f"{', '.join('model.' + u for u in used) or 'no scaling field'})")
        else:
            _require(value is not None and value > 0, f"model.{name}", value,
                     f"must be > 0 with model.rope_scaling={m.rope_scaling!r}")
    for larger, smaller in scaling.larger_than:
        _require(getattr(m, larger) > getattr(m, smaller), f"model.{larger}", getattr(m, larger),
                 f"must exceed model.{smaller}={getattr(m, smaller)}")


def _validate_engine(par: ParallelConfig) -> None:
    _require(par.engine in ENGINES, "parallel.engine", par.engine,
             f"valid values: {', '.join(ENGINES)}")
    if par.uses_zero:
        _require(par.zero_stage in (1, 2, 3), "parallel.zero_stage", par.zero_stage,
                 "must be 1, 2 or 3 with parallel.engine=deepspeed (for plain data parallelism"
                 " use parallel.engine=megatron)")
        _require(not par.force_megatron_engine, "parallel.force_megatron_engine", True,
                 "forces the megatron engine, so it needs parallel.engine=megatron, not"
                 " deepspeed")
        # ZeRO-2/3 take the gradients in their backward hooks, before the pipeline's
        # schedule or the sequence-parallel norm reduction could complete them.
        _require(par.pipeline_model_parallel_size == 1, "parallel.pipeline_model_parallel_size",
                 par.pipeline_model_parallel_size,
                 "must be 1 with parallel.engine=deepspeed (pipeline parallelism runs with"
                 " parallel.engine=megatron)")
        _require(not par.sequence_parallel, "parallel.sequence_parallel", True,
                 "is not supported with parallel.engine=deepspeed; use parallel.engine=megatron")
    else:
        _require(par.zero_stage == 0, "parallel.zero_stage", par.zero_stage,
                 "ZeRO stages need parallel.engine=deepspeed; with parallel.engine=megatron it"
                 " must be 0 (its distributed optimizer shards the optimizer state)")


def _validate_run(cfg: Config) -> None:
    d, t, lg = cfg.data, cfg.train, cfg.logging
    _require(len(d.weights) in (0, len(d.prefixes)), "data.weights", d.weights,
             f"must be empty or have one weight per data.prefixes entry ({len(d.prefixes)})")
    _require(all(w > 0 for w in d.weights), "data.weights", d.weights, "must all be > 0")
    parts = d.split.replace("/", ",").split(",")
    _require(len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts)
             and sum(float(p) for p in parts) > 0, "data.split", d.split,
             'must be three non-negative numbers such as "969,30,1"')
    _require(1 <= d.seq_length <= cfg.model.max_position_embeddings, "data.seq_length",
             d.seq_length, f"must be in [1, model.max_position_embeddings="
             f"{cfg.model.max_position_embeddings}]")
    for name in ("steps", "micro_batch_size", "global_batch_size", "log_interval",
                 "eval_interval", "save_interval", "keep_checkpoints"):
        _require(getattr(t, name) >= 1, f"train.{name}", getattr(t, name), "must be >= 1")
    _require(t.global_batch_size % t.micro_batch_size == 0, "train.global_batch_size",
             t.global_batch_size, f"must be a multiple of train.micro_batch_size={t.micro_batch_size}")
    _require(t.lr > 0, "train.lr", t.lr, "must be > 0")
    _require(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]")
    _require(0 <= t.warmup_fraction < 1, "train.warmup_fraction", t.warmup_fraction,
             "must be in [0, 1)")
    _require(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    _require(0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1, "train.adam_beta1/adam_beta2",
             (t.adam_beta1, t.adam_beta2), "must be in [0, 1)")
    _require(t.adam_eps > 0, "train.adam_eps", t.adam_eps, "must be > 0")
    _require(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0 = off)")
    _require(t.eval_batches >= 0, "train.eval_batches", t.eval_batches, "must be >= 0")
    _require(t.max_wall_time_s >= 0, "train.max_wall_time_s", t.max_wall_time_s,
             "must be >= 0 (0 = no limit)")
    _require(t.exit_interval >= 0, "train.exit_interval", t.exit_interval, "must be >= 0 (0 = never)")
    _require(t.peak_tflops >= 0, "train.peak_tflops", t.peak_tflops, "must be >= 0 (0 = auto)")
    _require(t.max_nonfinite_skips >= 0, "train.max_nonfinite_skips", t.max_nonfinite_skips,
             "must be >= 0")
    _require(t.precision in PRECISIONS, "train.precision", t.precision,
             f"valid values: {', '.join(PRECISIONS)}")
    # ZeRO-3 gathers each module's partitioned parameters in forward hooks: Python inside
    # the layers that torch.compile would have to trace.
    _require(not (t.compile and cfg.parallel.zero_stage == 3), "train.compile", t.compile,
             "is not supported with parallel.zero_stage=3; use zero_stage 1 or 2, or "
             "train.compile=false")
    _require(t.recompute in RECOMPUTE, "train.recompute", t.recompute,
             f"valid values: {', '.join(RECOMPUTE)}")
    _require(lg.wandb in WANDB_MODES, "logging.wandb", lg.wandb,
             f"valid values: {', '.join(WANDB_MODES)}")


def check_sequence_length(seq_len: int, model: ModelConfig) -> None:
    """Tokens beyond the RoPE table have no position: refuse them before any compute."""
    _require(seq_len <= model.max_position_embeddings, "sequence length", seq_len,
             f"must be <= model.max_position_embeddings={model.max_position_embeddings}")


# ----------------------------------------------------------------------------- loading


_SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check a YAML value against a dataclass field's type; ints are accepted as floats."""
    hint = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if hint in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name)
    if hint is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} has the wrong type: expected a list")
        return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(
                f"{name}={value!r} has the wrong type: expected {annotation.__name__}"
            )
        return value
    raise TypeError(f"unsupported annotation {annotation} for {name}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "config"
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'ponder.k=3' -> ('ponder.k', 3); values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def config_from_dict(data: dict, overrides: list[str] = ()) -> Config:
    data = copy.deepcopy(data)  # overrides must not write into the caller's (shared) mappings
    for text in overrides:
        _set_dotted(data, *parse_override(text))
    return _build(Config, data, "").validate()


def merge_recipes(base: dict, overlay: dict) -> dict:
    """`overlay` on top of `base`: mappings merge key by key, any other value (a list too)
    replaces the base's. The one way recipes compose (a recipe's `base:`, sweep grids)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_recipes(merged[key], value)
        merged[key] = value
    return merged


def read_yaml_mapping(path: str | Path, kind: str = "recipe file",
                      keys: str = "model:, ponder:, data:, train:, ...") -> dict:
    """A YAML file's top-level mapping; ConfigError naming the file if it is missing, not
    UTF-8 text, not YAML, or not a mapping (empty file: {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as stream:  # YAML errors then name the file
            data = yaml.safe_load(stream)
    except UnicodeDecodeError:
        raise ConfigError(f"{kind} {path} is not UTF-8 text; expected a YAML mapping of "
                          f"{keys}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} holds a YAML {type(data).__name__} at the top level; "
                          f"expected a mapping of {keys}")
    return data


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's mapping with its `base:` resolved: `base: FILE` (relative to the file
    that names it) is read first, recursively, and this file's values override it."""
    path = Path(path)
    if not path.is_file():
        where = f" (the base of {_seen[-1]})" if _seen else ""
        raise ConfigError(f"recipe file {path} does not exist{where}")
    if path.resolve() in _seen:
        raise ConfigError(f"{_seen[-1]}: base {path} makes a cycle of recipe bases")
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base={base!r} must be the path of another recipe file")
    return merge_recipes(read_recipe(path.parent / base, (*_seen, path.resolve())), data)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    data = read_recipe(path)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
