"""train: the optimisation and the run around it, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_ponder.config.checks import require
from megatron_ponder.config.choices import Precision, Recompute


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
    precision: Precision = Precision.AUTO
    # Run the decoder layers under torch.compile (model/compile.py): the first step pays
    # the compilation (minutes on a 2-core CPU), every later step runs fused kernels.
    compile: bool = False
    # Activation recomputation: "none", "layers" (each layer of each pass keeps only its
    # input) or "passes" (each pass keeps only its block stack's input); tools/plan_memory.py.
    recompute: Recompute = Recompute.NONE
    # Peak FLOP/s per device for MFU; 0 = a table of GPUs, or a measured matmul rate on CPU.
    peak_tflops: float = 0.0

    def validate(self, zero_stage: int) -> None:
        """zero_stage: parallel.zero_stage (ZeRO-3 cannot run compiled layers)."""
        self._validate_optimisation()
        self._validate_limits()
        require(self.precision in Precision.values(), "train.precision", self.precision,
                Precision.valid_values())
        # ZeRO-3 gathers each module's partitioned parameters in forward hooks: Python inside
        # the layers that torch.compile would have to trace.
        require(not (self.compile and zero_stage == 3), "train.compile", self.compile,
                "is not supported with parallel.zero_stage=3; use zero_stage 1 or 2, or "
                "train.compile=false")
        require(self.recompute in Recompute.values(), "train.recompute", self.recompute,
                Recompute.valid_values())

    def _validate_optimisation(self) -> None:
        for name in ("steps", "micro_batch_size", "global_batch_size", "log_interval",
                     "eval_interval", "save_interval", "keep_checkpoints"):
            require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be >= 1")
        require(self.global_batch_size % self.micro_batch_size == 0, "train.global_batch_size",
                self.global_batch_size,
                f"must be a multiple of train.micro_batch_size={self.micro_batch_size}")
        require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio,
                "must be in [0, 1]")
        require(0 <= self.warmup_fraction < 1, "train.warmup_fraction", self.warmup_fraction,
                "must be in [0, 1)")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        require(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1,
                "train.adam_beta1/adam_beta2", (self.adam_beta1, self.adam_beta2),
                "must be in [0, 1)")
        require(self.adam_eps > 0, "train.adam_eps", self.adam_eps, "must be > 0")
        require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "must be >= 0 (0 = off)")

    def _validate_limits(self) -> None:
        require(self.eval_batches >= 0, "train.eval_batches", self.eval_batches, "must be >= 0")
        require(self.max_wall_time_s >= 0, "train.max_wall_time_s", self.max_wall_time_s,
                "must be >= 0 (0 = no limit)")
        require(self.exit_interval >= 0, "train.exit_interval", self.exit_interval,
                "must be >= 0 (0 = never)")
        require(self.peak_tflops >= 0, "train.peak_tflops", self.peak_tflops,
                "must be >= 0 (0 = auto)")
        require(self.max_nonfinite_skips >= 0, "train.max_nonfinite_skips",
                self.max_nonfinite_skips, "must be >= 0")
