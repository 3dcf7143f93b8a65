"""Pipeline parallelism for multi-pass pondering.

A method is a pass program (ponder/program.py). With S stages each pass of a micro-batch
crosses stages 0..S-1 (hidden states and the per-key bias travel forward), and the last
stage's result (the carry: latent inputs and log w, Loop's residual stream, PonderLM-1's
logits) travels back to stage 0 to start the next pass: the stages form a ring.

Schedule (GPipe over passes): every stage runs the forward units (micro-batch m, pass p)
in the order p = 0..P-1, m = 0..M-1, then the backward units in the reverse order. While
micro-batch m's pass p travels round the ring, the stages work on the other micro-batches'
pass p, so with M >= S no stage waits except while the pipeline fills and drains:
bubble (S-1) / (M P + S-1) for equal passes (parallel/bubble.py simulates unequal ones).
Each unit is its own autograd graph: its inputs arrive as leaves, its backward is run with
the gradients received for its outputs, and the gradients of its inputs are sent on.
Gradients thus flow through every pass, or only through the passes the program keeps
(ponder.grad_passes). Sends are asynchronous and receives blocking; every rank follows the
same order of units, in which each unit's inputs come from earlier units, so no cycle of
waits can form. A dead peer fails the receive (gloo) or hits parallel.distributed_timeout_s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_ponder.ponder.program import PassProgram

# Message tags: each kind of tensor has its own stream per pair of ranks.
_HIDDEN, _BIAS, _CARRY = 0, 1, 2
_GRAD_HIDDEN, _GRAD_BIAS, _GRAD_CARRY = 10, 11, 12
_WIRE_DTYPE = torch.float32


@dataclass
class PipelineResult:
    loss: float  # mean objective (LM loss + penalty) over micro-batches (every rank)
    parts: dict[str, float]  # mean of the loss parts (lm_loss, penalty) over micro-batches
    stats: dict[str, float]  # mean of the model's statistics over micro-batches
    pass_slots: list[list[int]]  # per micro-batch
    scores: list[Any]  # per micro-batch, whatever `score` returned on the last stage
    busy_s: float  # this rank's compute time
    total_s: float  # this rank's wall time for the whole schedule
    bubble_fraction: float  # 1 - busy / total, averaged over the pipeline's stages


@dataclass
class _Unit:
    inputs: list[torch.Tensor] = field(default_factory=list)  # leaves received
    outputs: list[torch.Tensor] = field(default_factory=list)  # what was sent / the loss
    bias: torch.Tensor | None = None


class _Ring:
    """Point-to-point messages with the neighbouring stages (the last stage's next is the first)."""

    def __init__(self):
        self.next = parallel_state.get_pipeline_model_parallel_next_rank()
        self.prev = parallel_state.get_pipeline_model_parallel_prev_rank()
        self.pending: list[tuple[Any, torch.Tensor]] = []
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def send(self, tensor: torch.Tensor, to_next: bool, tag: int) -> None:
        wire = tensor.detach().to(_WIRE_DTYPE).contiguous()
        work = dist.isend(wire, self.next if to_next else self.prev, tag=tag)
        self.pending.append((work, wire))  # the buffer must outlive the transfer

    def recv(self, shape, from_prev: bool, tag: int) -> torch.Tensor:
        buffer = torch.empty(shape, dtype=_WIRE_DTYPE, device=self.device)
        dist.recv(buffer, self.prev if from_prev else self.next, tag=tag)
        return buffer

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


def _grad_or_zeros(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)


class PipelineSchedule:
    """One training or evaluation step of M micro-batches on this stage."""

    def __init__(self, model, programs: list[PassProgram], batches: list[dict],
                 autocast: Callable, train: bool,
                 score: Callable[[Any, dict], Any] | None = None,
                 backward_autocast: Callable = contextlib.nullcontext):
        self.model, self.programs, self.batches = model, programs, batches
        self.autocast, self.train, self.score = autocast, train, score
        self.backward_autocast = backward_autocast
        self.first = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
        self.last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        self.ring = _Ring()
        self.units: dict[tuple[int, int], _Unit] = {}
        self.losses: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.stats: list[dict[str, float]] = []
        self.scores: list[Any] = []
        self.busy_s = 0.0

    def _has_grad(self, program: PassProgram, p: int) -> bool:
        return self.train and p >= program.first_pass_with_grad

    # ------------------------------------------------------------------ forward

    def forward(self, m: int, p: int) -> None:
        program = self.programs[m]
        grad = self._has_grad(program, p)
        n, length, batch = program.passes[p], program.num_tokens, program.batch_size
        unit = _Unit()
        if self.first:
            carry = None
            if p > 0:
                carry = tuple(self.ring.recv(shape, from_prev=True, tag=_CARRY + i)
                              .requires_grad_(self._has_grad(program, p - 1))
                              for i, shape in enumerate(program.carry_shapes(p - 1)))
                unit.inputs = list(carry)
            tic = time.perf_counter()
            with torch.set_grad_enabled(grad), self.autocast():
                pass_input = program.first_stage_input(p, carry)
            hidden, bias = pass_input.hidden, pass_input.key_log_w
        else:
            hidden = self.ring.recv((n * length, batch, program.backbone.hidden_size),
                                    from_prev=True, tag=_HIDDEN).requires_grad_(grad)
            bias = None
            if program.has_key_bias(p):
                bias = self.ring.recv((batch, n * length), from_prev=True,
                                      tag=_BIAS).requires_grad_(grad)
            unit.inputs = [hidden] + ([bias] if bias is not None else [])
            tic = time.perf_counter()
        unit.bias = bias
        with torch.set_grad_enabled(grad), self.autocast():
            out = program.backbone.run(hidden, program.position_ids(p), bias, final_norm=False)
            if self.last:
                result = program.last_stage_output(p, out)
        if not self.last:
            self.busy_s += time.perf_counter() - tic
            self.ring.send(out, to_next=True, tag=_HIDDEN)
            if bias is not None:
                self.ring.send(bias, to_next=True, tag=_BIAS)
            unit.outputs = [out]
        elif not program.is_final(p):
            self.busy_s += time.perf_counter() - tic
            for i, tensor in enumerate(result):
                self.ring.send(tensor, to_next=True, tag=_CARRY + i)
            unit.outputs = list(result)
        else:
            self._finish(m, result, unit, grad)
            self.busy_s += time.perf_counter() - tic
        self.units[m, p] = unit

    def _finish(self, m: int, output, unit: _Unit, grad: bool) -> None:
        batch = self.batches[m]
        with torch.set_grad_enabled(grad):
            loss, parts = self.model.loss(output, batch["labels"], batch["loss_mask"])
        self.losses.append(loss.item())
        self.parts.append({key: value.item() for key, value in parts.items()})
        self.stats.append(self.model.statistics(output, batch["loss_mask"]))
        if self.score is not None:
            self.scores.append(self.score(output, batch))
        unit.outputs = [loss / len(self.batches)]

    # ------------------------------------------------------------------ backward

    def backward(self, m: int, p: int) -> None:
        program = self.programs[m]
        unit = self.units.pop((m, p))
        n, length, batch = program.passes[p], program.num_tokens, program.batch_size
        if self.last and program.is_final(p):
            grads = [None]
        elif self.last:
            grads = [self.ring.recv(shape, from_prev=False, tag=_GRAD_CARRY + i)
                     for i, shape in enumerate(program.carry_shapes(p))]
        else:
            grads = [self.ring.recv((n * length, batch, program.backbone.hidden_size),
                                    from_prev=False, tag=_GRAD_HIDDEN)]
            if unit.bias is not None:
                bias_grad = self.ring.recv((batch, n * length), from_prev=False, tag=_GRAD_BIAS)
                if self.first:  # the bias is this unit's own output: part of its graph
                    unit.outputs.append(unit.bias)
                    grads.append(bias_grad)
        tic = time.perf_counter()
        pairs = [(o, g) for o, g in zip(unit.outputs, grads) if o.requires_grad]
        if pairs:
            with self.backward_autocast():
                torch.autograd.backward([o for o, _ in pairs],
                                        [g.to(o.dtype) if g is not None else None for o, g in pairs])
        self.busy_s += time.perf_counter() - tic
        if not self.first:
            self.ring.send(_grad_or_zeros(unit.inputs[0]), to_next=False, tag=_GRAD_HIDDEN)
            if unit.bias is not None:
                total = _grad_or_zeros(unit.bias)
                if not self.last:  # the later stages' share arrived with the hidden gradient
                    total = total + bias_grad
                self.ring.send(total, to_next=False, tag=_GRAD_BIAS)
        elif p > 0 and self._has_grad(program, p - 1):
            for i, leaf in enumerate(unit.inputs):
                self.ring.send(_grad_or_zeros(leaf), to_next=False, tag=_GRAD_CARRY + i)

    # ------------------------------------------------------------------ the step

    def run(self) -> PipelineResult:
        start = time.perf_counter()
        order = [(m, p) for p in range(max(len(prog.passes) for prog in self.programs))
                 for m in range(len(self.programs)) if p < len(self.programs[m].passes)]
        for m, p in order:
            self.forward(m, p)
        if self.train:
            for m, p in reversed(order):
                if self._has_grad(self.programs[m], p):
                    self.backward(m, p)
        self.ring.flush()
        self.units.clear()
        total_s = time.perf_counter() - start
        return self._gather(total_s)

    def _gather(self, total_s: float) -> PipelineResult:
        """The last stage's losses, loss parts, statistics and scores, on every stage."""
        group = parallel_state.get_pipeline_model_parallel_group()
        payload = [None]
        if self.last:
            payload = [(sum(self.losses) / len(self.losses), _mean_of(self.parts),
                        _mean_of(self.stats), self.scores)]
        dist.broadcast_object_list(payload, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                   group=group)
        loss, parts, stats, scores = payload[0]
        idle = torch.tensor([1.0 - self.busy_s / total_s], dtype=torch.float64)
        dist.all_reduce(idle, group=group)
        return PipelineResult(
            loss=loss, parts=parts, stats=stats, pass_slots=[list(prog.passes) for prog in self.programs],
            scores=scores, busy_s=self.busy_s, total_s=total_s,
            bubble_fraction=idle.item() / dist.get_world_size(group),
        )


def _mean_of(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(d[key] for d in dicts) / len(dicts) for key in (dicts[0] if dicts else {})}


def pipeline_step(model, batches: list[dict], step: int, autocast: Callable, *, train: bool = True,
                  jacobi: int | None = None, score: Callable | None = None,
                  backward_autocast: Callable = contextlib.nullcontext) -> PipelineResult:
    """Forward (and, when training, backward) of `batches` (dicts of tokens, labels,
    loss_mask) through this rank's stage. Gradients accumulate into the parameters as for
    one backward of the mean loss over the micro-batches. autocast / backward_autocast:
    contexts for the forward and backward units (training/precision.py)."""
    programs = [model.program(b["tokens"], step=step, jacobi=jacobi) for b in batches]
    for program in programs:
        program.reuse_embeddings = False  # every unit is its own autograd graph
    return PipelineSchedule(model, programs, batches, autocast, train, score,
                            backward_autocast).run()
