"""The "megatron" engine: megatron-core DistributedDataParallel + its distributed optimizer
(optimizer state sharded over the data-parallel ranks, gradients reduce-scattered), on GPU
over NCCL and on CPU over gloo.

On CPU, megatron's literal CUDA calls resolve to the CPU inside
`cpu_shims.cuda_calls_resolve_to_cpu()`, which this engine enters around megatron's own calls
(never around the model's forward/backward). The collectives they issue all exist in gloo
(torch 2.13), so nothing is emulated: `reduce_scatter_tensor` of each gradient bucket
(finish_grad_sync, inside `_coalescing_manager`, synchronous since overlap_grad_reduce is
off), `all_gather_into_tensor` of the updated parameter shards (step_with_ready_grads, also
coalesced), `all_reduce` of the grad norm and of the found-inf flag, `all_gather_object` of
the param-group keys at construction and `all_gather` of the optimizer state at a save. tests/training/test_megatron_engine_run.py runs
them on gloo at DP 2, TP 2 x DP 2 and PP 2 x DP 2.

The optimizer state goes into the checkpoint in megatron's "fully_reshardable" layout
(gathered over the DP group at save, each rank keeping its slice at load), whose tensors
carry exactly the per-parameter keys and shapes of the other engines, so the checkpoint stays
engine- and layout-independent; the fp32 master copy is not saved (the model weights are the
fp32 master weights: params are fp32, bf16 is autocast).
"""

from __future__ import annotations

import math

import torch
from megatron.core.distributed import (
    DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads,
)
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from megatron_ponder.config import Config
from megatron_ponder.training.cpu_shims import cuda_calls_resolve_to_cpu
from megatron_ponder.training.engines.base import ADAM_MOMENTS, Engine

# megatron's model-space format whose tensors have the model parameters' shapes and keys
# (`optimizer.state.exp_avg.<model key>`): the other engines' format. Its sibling
# "fully_sharded_model_space" builds flattened ShardedTensors, which megatron-core 0.16.1's
# dist_checkpointing refuses ("ShardedTensor.flattened_range is not supported").
SHARDING = {"distrib_optim_sharding_type": "fully_reshardable"}


class MegatronEngine(Engine):
    def __init__(self, cfg: Config, model: torch.nn.Module):
        t = cfg.train
        self.cfg, self.model = cfg, model
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=True)
        with cuda_calls_resolve_to_cpu():
            self.module = DistributedDataParallel(config=model.config, ddp_config=ddp_config,
                                                  module=model)
            # Weight decay off for vectors (megatron's standard overrides: wd_mult 0 for 1-D
            # params and biases), the same groups as build_optimizer's.
            self.megatron_optimizer = get_megatron_optimizer(
                OptimizerConfig(optimizer="adam", lr=t.lr, weight_decay=t.weight_decay,
                                adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2,
                                adam_eps=t.adam_eps, clip_grad=t.grad_clip, bf16=False,
                                fp16=False, params_dtype=torch.float32,
                                use_distributed_optimizer=True),
                [self.module])
        # megatron-core 0.16.1 returns a ChainedOptimizer (one DistributedOptimizer per
        # param-dtype/expert partition; one here): per-optimizer calls go to its members.
        self.members = getattr(self.megatron_optimizer, "chained_optimizers",
                               [self.megatron_optimizer])
        # The inner torch optimizer: our LR schedule drives its groups' lr. Without megatron's
        # OptimizerParamScheduler nobody applies wd_mult, so apply it once here.
        self.optimizer = self.megatron_optimizer.optimizer
        for group in self.optimizer.param_groups:
            group["weight_decay"] = t.weight_decay * group.get("wd_mult", 1.0)

    def zero_grad(self) -> None:
        with cuda_calls_resolve_to_cpu():
            self.module.zero_grad_buffer()
            self.megatron_optimizer.zero_grad()

    def step(self, loss_is_finite: bool) -> float:
        with cuda_calls_resolve_to_cpu():
            # Without overlap, the reduce-scatter of every bucket happens here, once per step
            # (and, with PP, the tied-embedding reduction megatron asks PonderLM about).
            finalize_model_grads([self.module])
            found_inf = self.megatron_optimizer.prepare_grads()
            norm = float(self.megatron_optimizer.get_grad_norm())
            if loss_is_finite and not found_inf and math.isfinite(norm):
                if self.cfg.train.grad_clip > 0:
                    self.megatron_optimizer.clip_grad_norm(self.cfg.train.grad_clip)
                self.megatron_optimizer.step_with_ready_grads()  # also all-gathers the params
        return norm

    # ------------------------------------------------------------------ checkpoints

    def _allocate_state(self) -> None:
        """The state a fresh AdamW would have (zeros), allocated by megatron's own helper of
        each member optimizer; torch's AdamW also counts steps per parameter (0 here: the
        first real step is then step 1, as without this)."""
        for member in self.members:
            member.init_state_fn(member.optimizer, member.config)
        if isinstance(self.optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            for param_state in self.optimizer.state.values():
                param_state.setdefault("step", torch.tensor(0.0))

    def sharded_optimizer_state(self, model_state: dict) -> tuple[dict, float]:
        with cuda_calls_resolve_to_cpu():
            if len(self.optimizer.state) == 0:  # before the first step: a load, or a save at 0
                self._allocate_state()
            # Kept for load_optimizer_state: a load fills the tensors of this same template.
            self._template = self.megatron_optimizer.sharded_state_dict(
                model_state, is_loading=False, metadata=SHARDING)
        groups = self._template["optimizer"]["param_groups"]
        adam_step = float(groups[0].get("step") or 0.0)
        moments = {i: {k: tensors[k] for k in ADAM_MOMENTS}
                   for i, tensors in self._template["param_state"].items()}
        # The groups persist (the other engines' loaders read their hyperparameters).
        return {"state": moments, "param_groups": groups}, adam_step

    def load_optimizer_state(self, optim: dict, adam_step: float) -> None:
        (member,) = self.members  # one DistributedOptimizer: fp32 params, no experts
        groups = self._template["optimizer"]["param_groups"]
        for group in groups:
            group["step"] = adam_step if isinstance(group.get("step"), float) else int(adam_step)
        # megatron's loader also sets the fp32 master shard ("param", not saved) from what it
        # is given; with fp32 params the master shard is a view of the model weight, so it is
        # given the weight just loaded (the template's "param" is the one before the load).
        # Its order: the params of each grad buffer, as in sharded_param_state_fully_reshardable.
        weights = [p.detach() for buffer in member.buffers for p in buffer.param_index_map]
        param_state = {i: {"param": weights[i], **{k: optim["state"][i][k] for k in ADAM_MOMENTS}}
                       for i in self._template["param_state"]}
        with cuda_calls_resolve_to_cpu():
            member.load_state_dict({"optimizer": {"param_groups": groups}})  # allocates + step
            # torch's AdamW (CPU, no Transformer Engine; TE's FusedAdam keeps no per-parameter
            # step) trips megatron-core 0.16.1 twice here: its loader copies every key of a
            # parameter's state from the loaded tensors but never passes "step" (KeyError),
            # and it gives all parameters ONE step tensor, which AdamW would then advance once
            # per parameter per step. Set the step aside, then give each parameter its own.
            steps = {p: s.pop("step") for p, s in member.optimizer.state.items() if "step" in s}
            member.load_parameter_state_from_fully_reshardable(param_state)
            for p, step in steps.items():
                member.optimizer.state[p]["step"] = step.clone()
            member.reload_model_params()  # master weights := the loaded model
        self._template = None
