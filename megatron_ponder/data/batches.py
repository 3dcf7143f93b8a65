"""Micro-batches for a training step, from the step number alone.

The global batch of step s is samples [s * G, (s + 1) * G) of the train dataset (G the
global batch size; megatron's dataset is already shuffled), laid out as megatron's
pretraining sampler does: micro-step a of data-parallel rank r reads samples
s * G + a * (mb * dp) + r * mb + [0, mb). The data position is therefore just the step
number: a run resumed at step s sees exactly the batches an uninterrupted run would, and no
sampler state needs checkpointing. A train dataset built for steps * G samples serves every
step.
"""

from __future__ import annotations

import torch

KEYS = ("tokens", "labels", "loss_mask")


def batch_for_step(dataset, step: int, global_batch_size: int, micro_batch_size: int,
                   dp_rank: int = 0, dp_size: int = 1) -> list[dict[str, torch.Tensor]]:
    """This rank's micro-batches of `step`: G / (mb * dp) dicts of `tokens` [mb, L] (int64),
    `labels` [mb, L] (int64) and `loss_mask` [mb, L] (float32)."""
    per_micro_step = micro_batch_size * dp_size
    if micro_batch_size < 1 or dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"micro_batch_size={micro_batch_size}, dp_rank={dp_rank}, "
                         f"dp_size={dp_size}: need micro_batch_size >= 1 and "
                         "0 <= dp_rank < dp_size")
    if global_batch_size < 1 or global_batch_size % per_micro_step:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple "
                         f"of micro_batch_size * dp_size = {per_micro_step}")
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    end = (step + 1) * global_batch_size
    if end > len(dataset):
        raise IndexError(f"step {step} needs samples up to {end}, but the dataset has "
                         f"{len(dataset)}: build it with num_samples >= steps * "
                         f"global_batch_size = {end} or more")
    batches = []
    for micro_step in range(global_batch_size // per_micro_step):
        start = step * global_batch_size + micro_step * per_micro_step + dp_rank * micro_batch_size
        items = [dataset[i] for i in range(start, start + micro_batch_size)]
        batches.append({key: torch.stack([item[key] for item in items]) for key in KEYS})
    return batches
