"""The memory plan of a recipe: bytes per rank of parameters, gradients, optimizer state and
activations, the peak of a training step, whether it fits, and the largest micro-batch that does.

What a step holds at its peak, on the rank (pipeline stage) that holds the most:
- the model states (memory/states.py), all step long;
- the activations kept for the backward (memory/activations.py): one micro-batch's, or with
  pipeline parallelism every micro-batch's of the step (the schedule runs all forward units
  before the backward units, parallel/pipeline.py), plus the fp32 tensors the pipeline
  received (each unit's input leaves);
- the weight gradients, as the backward creates them: the backward starts with every kept
  activation alive and creates the head's gradients (LM head, final norm, router); walking
  back through the last pass it frees that pass's activations layer by layer while it creates
  the layers' gradients, then frees the earlier passes' activations with no new gradients.
  Both change linearly over the layers, so the largest sum is at an end of the last pass:
  max(kept + head grads, kept - last pass + all grads). With 18-22 passes that is nearly
  kept + grads; with one pass (vanilla) nearly the larger of the two;
- on top, the larger of two moments: the end of a forward, when autocast's bf16 copies of the
  weights are alive (torch caches one cast per weight for the autocast region), and the
  backward's working set. Without recomputation that is one layer of the largest pass: a
  layer's backward frees its activations as it creates their gradients, which have their
  shapes (counting a second layer's worth overstated the exact peak by 25%). With
  recomputation, the activations one recomputed region (one layer, or one pass's stack, of
  the largest pass) brings back at once, plus the gradients in flight while its backward
  frees them: RECOMPUTED_GRADIENTS of a layer, measured. Against the exact peak on CPU:
  within 10% for every recompute mode (tests/memory, bench/memory.py --exact).
Training draws J per step: the plan takes the largest J of ponder.jacobi_train.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from megatron_ponder.config import Config, Precision, Recompute
from megatron_ponder.memory import activations as act
from megatron_ponder.memory.states import state_bytes, stage_params
from megatron_ponder.ponder import get_method, method_class

GB = 1e9
# Gradients in flight during a recomputed region's backward, in layers of the largest pass:
# measured with bench/memory.py --exact (H 128, 4 layers, L 48, micro-batch 4, PonderLM-3 K 3,
# fp32, CPU): 1.5 layers of working set in all for `layers`, a stack + 0.5 for `passes`; the
# prediction is then within 1% (layers, passes) and +9% (layers at TP 2) of the exact peak.
RECOMPUTED_GRADIENTS = 0.5


@dataclass
class StagePlan:
    """One micro-batch on one pipeline stage."""

    kept: float  # activations kept for the backward under train.recompute
    largest_pass: float  # one pass's activations without recomputation, the largest pass
    last_pass: float  # what the last pass with gradients keeps (the backward frees it first)
    recomputed_region: float  # what recomputation brings back at once (0 without it)
    largest_layer: float  # one layer of the largest pass, without recomputation
    wire: float  # pipeline: the fp32 inputs received, per micro-batch


@dataclass
class MemoryPlan:
    gpus: int
    data_parallel: int
    micro_batch_size: int
    micro_batches_per_step: int
    stage: int  # the pipeline stage whose peak this is (the largest)
    params: float
    grads: float
    optimizer: float
    autocast_copies: float
    activations_largest_pass: float
    activations_kept: float
    activations_and_grads: float  # the largest sum of the two during the backward
    backward_working: float
    peak: float
    gpu_memory: float
    fits: bool
    max_micro_batch_size: int  # the largest that fits and divides the step's batch; 0: none

    def as_dict(self) -> dict:
        return asdict(self)


def widths(cfg: Config, cuda: bool) -> act.Widths:
    m, p, par = cfg.model, cfg.ponder, cfg.parallel
    tp = par.tensor_model_parallel_size
    return act.Widths(
        hidden=m.hidden_size, heads=m.num_attention_heads // tp, groups=m.kv_heads // tp,
        head_dim=m.head_size, ffn=m.ffn_size // tp,
        vocab=m.vocab_size // tp, layers=m.num_layers // par.pipeline_model_parallel_size,
        k=get_method(p).k, tp=tp, sequence_parallel=par.sequence_parallel,
        compute_bytes=2 if Precision.uses_bf16(cfg.train.precision, cuda) else 4,
        device="cuda" if cuda else "cpu",
        backend=p.attention_backend, qk_norm=m.qk_norm)


def program_for(cfg: Config, micro_batch: int, jacobi: int | None = None):
    """The method's pass program for one micro-batch (shapes only: no backbone, meta tokens)."""
    method = get_method(cfg.ponder)
    tokens = torch.empty((micro_batch, cfg.data.seq_length), dtype=torch.long, device="meta")
    return method.program(None, tokens,
                          jacobi=max(method.jacobi_train) if jacobi is None else jacobi)


def _stack_bytes(w: act.Widths, slots: int, positions: int, key_bias: bool) -> float:
    """One pass's stack on this stage without recomputation."""
    layers = [act.layer_slot_bytes(w, key_bias, first_in_stack=i == 0) for i in range(w.layers)]
    return slots * sum(layers) + positions * w.layers * act.layer_position_bytes(w)


def stage_plan(cfg: Config, w: act.Widths, micro_batch: int, stage: int, stages: int,
               jacobi: int | None = None) -> StagePlan:
    program = program_for(cfg, micro_batch, jacobi)
    recompute = cfg.train.recompute
    first, last = stage == 0, stage == stages - 1
    length = cfg.data.seq_length
    tokens = micro_batch * length
    router = method_class(cfg.ponder.method).uses_router
    kept = largest = region = layer = wire = last_pass = 0.0
    for p, n in enumerate(program.passes):
        if p < program.first_pass_with_grad:
            continue  # run without autograd: nothing kept
        slots, positions, bias = n * tokens, n * length, program.has_key_bias(p)
        stack = _stack_bytes(w, slots, positions, bias)
        layer = max(layer, stack / w.layers)
        before = kept
        if recompute == Recompute.NONE:
            kept += stack
        elif recompute == Recompute.LAYERS:
            kept += (slots * sum(act.layer_input_slot_bytes(w, i == 0) for i in range(w.layers))
                     + act.rope_angles_bytes(w, positions))
            region = layer
        else:  # passes: the stack's input
            kept += slots * act.layer_input_slot_bytes(w, True) + act.rope_angles_bytes(w, positions)
            region = max(region, stack)
        if bias:
            kept += act.key_bias_bytes(slots)
        if not first:
            wire += slots * w.hidden * act.FP32
        extra = 0.0
        if last:
            final = program.is_final(p)
            extra += act.final_norm_bytes(w, slots, output_kept=final)
            if router:
                extra += act.router_bytes(w, tokens, final)
            if final:
                extra += act.head_bytes(w, tokens, fused=router)
        if first and (p == program.first_pass_with_grad or stages > 1):
            # One lookup serves every pass in one process (PassProgram.token_embeddings);
            # each pipeline unit is its own graph and looks the embeddings up again.
            extra += act.embedding_bytes(w, tokens)
        kept += extra
        last_pass = kept - before
        largest = max(largest, stack + extra)
    return StagePlan(kept, largest, last_pass, region, layer, wire)


def plan_stage(cfg: Config, gpus: int, stage: int, gpu_memory_gb: float = 80.0,
               cuda: bool = True, micro_batch: int | None = None) -> MemoryPlan:
    """The plan of one pipeline stage's ranks (max_micro_batch_size left at 0)."""
    par, t = cfg.parallel, cfg.train
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    if gpus % (tp * pp):
        raise ValueError(f"{gpus} GPUs are not a multiple of TP x PP = {tp * pp}")
    dp = gpus // (tp * pp)
    b = micro_batch or t.micro_batch_size
    micro_batches = max(1, t.global_batch_size // (b * dp))
    w = widths(cfg, cuda)
    params = stage_params(cfg, stage)
    states = state_bytes(cfg, params.total, dp)
    sp = stage_plan(cfg, w, b, stage, pp)
    held = micro_batches if pp > 1 else 1  # GPipe keeps every micro-batch's activations
    kept = held * (sp.kept + sp.wire)
    copies = 2 * params.matrices if w.compute_bytes == 2 else 0
    working = (sp.recomputed_region + RECOMPUTED_GRADIENTS * sp.largest_layer
               if sp.recomputed_region else sp.largest_layer)
    head_grads = states.grads * params.head / params.total
    activations_and_grads = max(kept + head_grads, kept - sp.last_pass + states.grads)
    peak = states.params + states.optimizer + activations_and_grads + max(copies, working)
    return MemoryPlan(
        gpus=gpus, data_parallel=dp, micro_batch_size=b, micro_batches_per_step=micro_batches,
        stage=stage, params=states.params, grads=states.grads, optimizer=states.optimizer,
        autocast_copies=copies, activations_largest_pass=sp.largest_pass,
        activations_kept=kept, activations_and_grads=activations_and_grads,
        backward_working=working, peak=peak,
        gpu_memory=gpu_memory_gb * GB, fits=peak <= gpu_memory_gb * GB, max_micro_batch_size=0)


def plan_memory(cfg: Config, gpus: int, gpu_memory_gb: float = 80.0, cuda: bool = True,
                micro_batch: int | None = None) -> MemoryPlan:
    """The plan of `cfg` on `gpus` devices of `gpu_memory_gb` each, for the pipeline stage that
    needs the most (cuda: the GPU code path and precision; False: the CPU one, for checks
    against measurement on this machine)."""
    plans = [plan_stage(cfg, gpus, stage, gpu_memory_gb, cuda, micro_batch)
             for stage in range(cfg.parallel.pipeline_model_parallel_size)]
    best = max(plans, key=lambda plan: plan.peak)
    if micro_batch is None:
        best.max_micro_batch_size = largest_fitting_micro_batch(cfg, gpus, gpu_memory_gb, cuda)
    return best


def largest_fitting_micro_batch(cfg: Config, gpus: int, gpu_memory_gb: float, cuda: bool) -> int:
    """The largest micro-batch that fits and divides the step's batch per DP rank; 0: none."""
    par = cfg.parallel
    dp = gpus // (par.tensor_model_parallel_size * par.pipeline_model_parallel_size)
    per_rank = cfg.train.global_batch_size // dp
    fitting = 0
    for b in range(1, per_rank + 1):
        if per_rank % b:
            continue
        if not plan_memory(cfg, gpus, gpu_memory_gb, cuda, micro_batch=b).fits:
            break
        fitting = b
    return fitting
