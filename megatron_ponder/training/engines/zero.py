"""The "deepspeed" engine: DeepSpeed ZeRO stage 1, 2 or 3 around the megatron-core model.

Our own torch AdamW (param groups: no decay on vectors) is the client optimizer, so
DeepSpeed compiles no optimizer op and our LR schedule drives its param groups; clipping
(train.grad_clip) and the batch arithmetic come from the train config. The trainer calls
backward per micro-batch and step() once per global batch ("managed_gradient_accumulation":
false): stage 1 reduces the gradients once per step, stages 2/3 reduce-scatter as they go.
Steps whose gradient norm is not finite are skipped by ZeRO itself.

Checkpoints hold the per-parameter AdamW state of every other engine: the moments come out
of and go back into ZeRO's flat partitions through deepspeed.utils.safe_get/set_full_*.
"""

from __future__ import annotations

import contextlib
import os
import types

import deepspeed
import torch
from deepspeed.utils import safe_get_full_optimizer_state, safe_set_full_optimizer_state
from megatron.core import parallel_state

from megatron_ponder.config import Config
from megatron_ponder.training.engines.base import (
    ADAM_MOMENTS, Engine, loaded_group_settings, per_parameter_optimizer_state,
)


def megatron_mpu():
    """DeepSpeed's `mpu` interface on megatron-core's parallel_state. DeepSpeed speaks
    Megatron-LM's old names, where "model parallel" meant tensor parallel."""
    ps = parallel_state
    return types.SimpleNamespace(
        get_model_parallel_group=ps.get_tensor_model_parallel_group,
        get_model_parallel_rank=ps.get_tensor_model_parallel_rank,
        get_model_parallel_world_size=ps.get_tensor_model_parallel_world_size,
        get_tensor_model_parallel_group=ps.get_tensor_model_parallel_group,
        get_tensor_model_parallel_rank=ps.get_tensor_model_parallel_rank,
        get_tensor_model_parallel_world_size=ps.get_tensor_model_parallel_world_size,
        get_tensor_model_parallel_src_rank=ps.get_tensor_model_parallel_src_rank,
        get_data_parallel_group=ps.get_data_parallel_group,
        get_data_parallel_rank=ps.get_data_parallel_rank,
        get_data_parallel_world_size=ps.get_data_parallel_world_size,
        get_pipeline_model_parallel_group=ps.get_pipeline_model_parallel_group,
        get_pipeline_model_parallel_rank=ps.get_pipeline_model_parallel_rank,
        get_pipeline_model_parallel_world_size=ps.get_pipeline_model_parallel_world_size,
    )


def deepspeed_config(cfg: Config) -> dict:
    t = cfg.train
    dp = parallel_state.get_data_parallel_world_size()
    return {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.global_batch_size // (t.micro_batch_size * dp),
        "managed_gradient_accumulation": False,
        "gradient_clipping": t.grad_clip,
        # fp32 master weights as in every engine; bf16 is the trainer's autocast.
        "zero_optimization": {"stage": cfg.parallel.zero_stage},
        "steps_per_print": 2**62,  # our logger reports
    }


@contextlib.contextmanager
def _local_rank_of_a_lone_process():
    """DeepSpeed asserts LOCAL_RANK is set (torchrun sets it): a process started without a
    launcher gets 0 for the engine's set-up only. Not left in os.environ, where child
    processes would inherit it (accelerate, under lm-eval, then expects a launcher's RANK)."""
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        yield
        return
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        os.environ.pop("LOCAL_RANK", None)


class DeepSpeedEngine(Engine):
    def __init__(self, cfg: Config, model: torch.nn.Module):
        super().__init__(cfg, model)  # the client AdamW
        # ZeRO replaces the groups' params by flat partitions: keep the model's order.
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.group_indices = [g["params"] for g in self.optimizer.state_dict()["param_groups"]]
        with _local_rank_of_a_lone_process():
            self.module, self.zero_optimizer, _, _ = deepspeed.initialize(
                model=model, optimizer=self.optimizer, config=deepspeed_config(cfg),
                mpu=megatron_mpu(), dist_init_required=False)
        self._allocate_optimizer_state()

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss, scale_wrt_gas=False)  # the trainer already divided

    def zero_grad(self) -> None:
        self.module.zero_grad()

    def step(self, loss_is_finite: bool) -> float:
        # A non-finite loss has non-finite gradients, which ZeRO's norm check skips.
        self.module.step()
        return float(self.module.get_global_grad_norm())

    # ------------------------------------------------------------------ checkpoints

    def full_parameters(self, modify: bool = False):
        if self.cfg.parallel.zero_stage < 3:
            return super().full_parameters(modify)
        return deepspeed.zero.GatheredParameters(self.params, modifier_rank=0 if modify else None)

    def _allocate_optimizer_state(self) -> None:
        """Give the client AdamW, over ZeRO's flat fp32 partitions, the state a fresh AdamW
        creates in its first step (zeros, step 0: the numbers do not change), and map every
        parameter onto its fragment of it. Left lazy, DeepSpeed 0.19.8's ZeRO 1/2 map the
        fragments after stepping the first param group only, so the parameters of the
        second (no weight decay) group never get theirs and safe_get_full_optimizer_state
        fails for them."""
        inner = self.zero_optimizer.optimizer
        for group in inner.param_groups:
            for flat in group["params"]:
                inner.state[flat] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(flat),
                                     "exp_avg_sq": torch.zeros_like(flat)}
        link = getattr(self.zero_optimizer, "_lazy_init_hp_params_optimizer_state", None)
        if link is not None:  # ZeRO 1/2; ZeRO-3 reads the state directly
            link()

    def sharded_optimizer_state(self, model_state: dict) -> tuple[dict, float]:
        inner_state = self.zero_optimizer.optimizer.state
        adam_step = next(iter(inner_state.values()))["step"].item()
        moments = {i: {k: safe_get_full_optimizer_state(p, k).reshape(model_param_shape(p))
                       for k in ADAM_MOMENTS}
                   for i, p in enumerate(self.params)}
        # The groups' current hyperparameters (lr included), as torch's state_dict has them.
        groups = [{**{k: v for k, v in group.items() if k != "params"}, "params": indices}
                  for group, indices in zip(self.optimizer.param_groups, self.group_indices)]
        return per_parameter_optimizer_state(self.params, groups, moments, model_state), adam_step

    def load_optimizer_state(self, optim: dict, adam_step: float) -> None:
        self.zero_optimizer.refresh_fp32_params()  # master weights := the loaded model
        loaded_group_settings(self.optimizer.param_groups, optim["param_groups"])
        for state in self.zero_optimizer.optimizer.state.values():
            state["step"] = torch.tensor(adam_step)
        for i, p in enumerate(self.params):
            for key in ADAM_MOMENTS:
                safe_set_full_optimizer_state(p, optim["state"][i][key], key)


def model_param_shape(param: torch.nn.Parameter) -> torch.Size:
    return getattr(param, "ds_shape", param.shape)  # ZeRO-3 keeps the full shape aside
