"""AdamW, the warmup + cosine schedule, and tensor-parallel-aware gradient clipping."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import param_is_not_tensor_parallel_duplicate

from megatron_ponder.comm_device import comm_device
from megatron_ponder.config import TrainConfig

# Settings a checkpoint's optimizer state carries (AdamW's param groups, the schedule's base
# lr; which of them each engine restores differs): a resumed run would keep the saved values
# whatever the recipe says, so a resume that changes one is refused.
KEPT_FROM_CHECKPOINT = ("lr", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps")
# Settings a resumed run applies from its next step (the schedule and the clipping read the
# recipe); a change is logged.
APPLIED_ON_RESUME = ("steps", "warmup_fraction", "min_lr_ratio", "grad_clip",
                     "global_batch_size")


def resume_changes(saved: dict, t: TrainConfig) -> tuple[list[str], dict[str, list]]:
    """(refused changes as "train.X: checkpoint A, recipe B", applied ones {train.X: [A, B]})
    between the train section a checkpoint was saved with and this run's."""
    refused = [f"train.{k}: checkpoint {saved[k]!r}, recipe {getattr(t, k)!r}"
               for k in KEPT_FROM_CHECKPOINT if k in saved and saved[k] != getattr(t, k)]
    applied = {f"train.{k}": [saved[k], getattr(t, k)]
               for k in APPLIED_ON_RESUME if k in saved and saved[k] != getattr(t, k)}
    return refused, applied


def build_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms, biases and other vectors (the usual LLaMA recipe)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)


def lr_factor(step: int, t: TrainConfig) -> float:
    """Linear warmup over warmup_fraction * steps, then cosine to min_lr_ratio."""
    warmup = int(round(t.warmup_fraction * t.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, t.steps - warmup))
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, t))


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """Global L2 norm of the gradients over the model-parallel (TP x PP) group; parameters
    replicated over TP ranks count once (pipeline stages share none: the head is untied)."""
    grads = [p.grad.detach() for p in model.parameters()
             if p.grad is not None and param_is_not_tensor_parallel_duplicate(p)]
    # One fused kernel per dtype and no host sync per parameter (it matters on GPUs).
    squares = (torch.stack(torch._foreach_norm(grads)).float().pow(2).sum() if grads
               else torch.zeros((), dtype=torch.float32, device=comm_device()))
    group = parallel_state.get_model_parallel_group()
    if dist.get_world_size(group) > 1:
        dist.all_reduce(squares, group=group)
    return squares.sqrt()


def clip_gradients(model: torch.nn.Module, max_norm: float, norm: torch.Tensor) -> None:
    if max_norm > 0 and norm.item() > max_norm:
        scale = max_norm / (norm.item() + 1e-6)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        torch._foreach_mul_(grads, scale)
