"""The "megatron" engine on GPU: megatron-core DistributedDataParallel + its distributed
optimizer (optimizer state sharded over the data-parallel ranks, gradients reduce-scattered).

Guarded by CUDA: megatron's DDP and distributed optimizer allocate on "cuda" (the CPU
fallback is torch_ddp.py). The optimizer state goes into the checkpoint in megatron's
"fully_sharded_model_space" layout, whose tensors carry exactly the per-parameter keys of the
other engines (`optimizer.state.exp_avg.<model key>`, each DP rank writing its flat slice),
so the checkpoint stays engine- and layout-independent; the fp32 master copy is not saved
(the model weights are the fp32 master weights: params are fp32, bf16 is autocast).
"""

from __future__ import annotations

import math

import torch
from megatron.core.dist_checkpointing.mapping import LocalNonpersistentObject
from megatron.core.distributed import (
    DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads,
)
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from megatron_ponder.config import Config
from megatron_ponder.training.engines.base import ADAM_MOMENTS, Engine

SHARDING = {"distrib_optim_sharding_type": "fully_sharded_model_space"}


class MegatronEngine(Engine):
    def __init__(self, cfg: Config, model: torch.nn.Module):
        t = cfg.train
        self.cfg, self.model = cfg, model
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=True)
        self.module = DistributedDataParallel(config=model.config, ddp_config=ddp_config,
                                              module=model)
        # Weight decay off for vectors (megatron's standard overrides: wd_mult 0 for 1-D
        # params and biases), the same groups as build_optimizer's.
        self.megatron_optimizer = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=t.lr, weight_decay=t.weight_decay,
                            adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=t.adam_eps,
                            clip_grad=t.grad_clip, bf16=False, fp16=False,
                            params_dtype=torch.float32, use_distributed_optimizer=True),
            [self.module])
        # The inner torch optimizer: our LR schedule drives its groups' lr. Without megatron's
        # OptimizerParamScheduler nobody applies wd_mult, so apply it once here.
        self.optimizer = self.megatron_optimizer.optimizer
        for group in self.optimizer.param_groups:
            group["weight_decay"] = t.weight_decay * group.get("wd_mult", 1.0)

    def zero_grad(self) -> None:
        self.module.zero_grad_buffer()
        self.megatron_optimizer.zero_grad()

    def step(self, loss_is_finite: bool) -> float:
        # Without overlap, the reduce-scatter of every bucket happens here, once per step.
        finalize_model_grads([self.module])
        found_inf = self.megatron_optimizer.prepare_grads()
        norm = float(self.megatron_optimizer.get_grad_norm())
        if loss_is_finite and not found_inf and math.isfinite(norm):
            if self.cfg.train.grad_clip > 0:
                self.megatron_optimizer.clip_grad_norm(self.cfg.train.grad_clip)
            self.megatron_optimizer.step_with_ready_grads()  # also all-gathers the params
        return norm

    # ------------------------------------------------------------------ checkpoints

    def sharded_optimizer_state(self, model_state: dict) -> tuple[dict, float]:
        if len(self.optimizer.state) == 0:
            # Before the first step (a load, or a save at step 0): the state a fresh AdamW
            # would have, allocated by megatron's own helper; torch's AdamW also counts steps
            # per parameter (0 here: the first real step is then step 1, as without this).
            self.megatron_optimizer.init_state_fn(self.optimizer, self.megatron_optimizer.config)
            if isinstance(self.optimizer, (torch.optim.Adam, torch.optim.AdamW)):
                for param_state in self.optimizer.state.values():
                    param_state.setdefault("step", torch.tensor(0.0))
        # Kept for load_optimizer_state: a load fills the tensors of this same template.
        self._template = self.megatron_optimizer.sharded_state_dict(
            model_state, is_loading=False, metadata=SHARDING)
        groups = self._template["optimizer"]["param_groups"]
        adam_step = float(groups[0].get("step") or 0.0)
        moments = {i: {k: tensors[k] for k in ADAM_MOMENTS}
                   for i, tensors in self._template["param_state"].items()}
        return {"state": moments, "param_groups": LocalNonpersistentObject(groups)}, adam_step

    def load_optimizer_state(self, optim: dict, adam_step: float) -> None:
        state = self._template
        for group in state["optimizer"]["param_groups"]:
            group["step"] = adam_step if isinstance(group.get("step"), float) else int(adam_step)
        for i, tensors in state["param_state"].items():
            loaded = optim["state"][i]
            state["param_state"][i] = {"fp32_param": tensors["fp32_param"].data,
                                       **{k: loaded[k] for k in ADAM_MOMENTS}}
        self.megatron_optimizer.load_state_dict(state)
        self.megatron_optimizer.reload_model_params()  # master weights := the loaded model
        self._template = None
