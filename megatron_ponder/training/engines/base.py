"""What the trainer asks of a data-parallel engine, and the plain engine (one replica).

An engine owns the replica's forward/backward/step inside the data-parallel group:
gradient synchronisation (only on a step's last micro-batch), clipping with the global norm,
skipping non-finite steps, and the optimizer state in the checkpoint. Every engine writes
the same per-parameter AdamW state (`per_parameter_optimizer_state`), so a checkpoint written
by one engine and layout loads under any other.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.optimizer import (
    get_param_id_to_sharded_param_map, optim_state_to_sharding_state,
)

from megatron_ponder.comm_device import comm_tensor
from megatron_ponder.config import Config
from megatron_ponder.training.cpu_shims import cuda_calls_resolve_to_cpu
from megatron_ponder.training.optim import build_optimizer, clip_gradients, grad_norm

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


def data_parallel_mean(values: list[float]) -> list[float]:
    """The mean of each value over the data-parallel ranks (one all-reduce), for logging."""
    if parallel_state.get_data_parallel_world_size() == 1:
        return list(values)
    t = comm_tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=parallel_state.get_data_parallel_group())
    return (t / parallel_state.get_data_parallel_world_size()).tolist()


def loaded_group_settings(groups: list[dict], saved: list[dict]) -> None:
    """Set each param group's hyperparameters (lr, betas, weight_decay, ...) from the
    checkpoint's group at the same position (every engine orders them: decay, then no
    decay). Only the keys this optimizer's groups have are taken, never `params`: another
    engine's groups carry its own keys (megatron's wd_mult, max_lr, ...) and its own
    parameter indices (megatron's: this rank's shards)."""
    for group, saved_group in zip(groups, saved, strict=True):
        group.update({k: saved_group[k] for k in group if k != "params" and k in saved_group})


def per_parameter_optimizer_state(params: list[torch.nn.Parameter], param_groups: list[dict],
                                  moments: dict[int, dict[str, torch.Tensor]],
                                  model_state: dict) -> dict:
    """A torch-format AdamW state dict (one `exp_avg` / `exp_avg_sq` tensor per parameter, in
    the parameter's TP-local shape) turned into dist_checkpointing ShardedTensors keyed like
    the model's (`optimizer.state.exp_avg.<model key>`): the engine-independent format."""
    optim = {"state": moments, "param_groups": param_groups}
    optim_state_to_sharding_state(optim, get_param_id_to_sharded_param_map(model_state, params))
    return optim


class Engine:
    """One replica, no data parallelism: the model and a torch AdamW, as they are."""

    def __init__(self, cfg: Config, model: torch.nn.Module):
        self.cfg = cfg
        self.model = model  # the bare PonderLM: loss, statistics, sharded_state_dict
        self.module = model  # what forward calls (a data-parallel wrapper in subclasses)
        self.optimizer = build_optimizer(model, cfg.train)  # the LR scheduler drives this one

    def forward(self, tokens: torch.Tensor, step: int):
        return self.module(tokens, step=step)

    def micro_batch(self, last: bool):
        """Context for one micro-batch's forward + backward; gradients are synchronised over
        the data-parallel group only in the step's last one."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, loss_is_finite: bool) -> float:
        """Clip to train.grad_clip and apply the accumulated gradients, unless the loss or
        the gradient norm is not finite (then nothing changes). Returns the global norm."""
        norm = grad_norm(self.model).item()
        if loss_is_finite and math.isfinite(norm):
            clip_gradients(self.model, self.cfg.train.grad_clip, torch.tensor(norm))
            self.optimizer.step()
        return norm

    # ------------------------------------------------------------------ checkpoints

    def full_parameters(self, modify: bool = False):
        """Context in which every parameter holds its full (TP-local) tensor, for saving and,
        with modify=True, loading the model; only ZeRO-3 partitions parameters."""
        return contextlib.nullcontext()

    def megatron_calls(self):
        """Context for megatron-core's own calls on this engine's tensors (a checkpoint save,
        run/checkpoint_write.py): without CUDA their literal CUDA calls resolve to the CPU."""
        return cuda_calls_resolve_to_cpu()

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def sharded_optimizer_state(self, model_state: dict) -> tuple[dict, float]:
        """(sharded optimizer state, AdamW step count) for the checkpoint."""
        opt = self.optimizer
        for p in self._params():  # a sharded load needs tensors to load into
            if not opt.state[p]:
                opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                "exp_avg_sq": torch.zeros_like(p)}
        optim = opt.state_dict()
        adam_step = next(iter(optim["state"].values()))["step"].item() if optim["state"] else 0.0
        moments = {i: {k: s[k] for k in ADAM_MOMENTS} for i, s in optim["state"].items()}
        return (per_parameter_optimizer_state(self._params(), optim["param_groups"], moments,
                                              model_state), adam_step)

    def load_optimizer_state(self, optim: dict, adam_step: float) -> None:
        state = {i: {"step": torch.tensor(adam_step), **moments}
                 for i, moments in optim["state"].items()}
        groups = self.optimizer.state_dict()["param_groups"]  # this optimizer's indices
        loaded_group_settings(groups, optim["param_groups"])
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
