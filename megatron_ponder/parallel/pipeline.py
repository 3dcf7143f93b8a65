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
(ponder.grad_passes). Messages never rely on a transport's buffering (NCCL has little and
ignores tags): each is exchanged at a point that the sender and the receiver both reach, in
one batch_isend_irecv per point as megatron-core pairs its sends and receives
(parallel/pipeline_plan.py), so the schedule runs unchanged under PONDER_STRICT_COMMS=1.
A dead peer fails the exchange (gloo) or hits parallel.distributed_timeout_s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_ponder.comm_device import comm_device, comm_empty, comm_tensor
from megatron_ponder.parallel.pipeline_plan import Exchange, Message, plan_stage
from megatron_ponder.parallel.setup import pipeline_p2p_group
from megatron_ponder.ponder.program import PassProgram

_WIRE_DTYPE = torch.float32
_warmed_up: set[str] = set()  # pipeline groups whose communicator exists


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


class _Wire:
    """The stage's exchanges with its neighbours in the ring (the last stage's next is the
    first): outputs wait in `outbox` for their exchange, inputs wait in `inbox` for their unit,
    both keyed by the producing unit (backward, m, p)."""

    def __init__(self):
        self.group = pipeline_p2p_group()
        self.stages = parallel_state.get_pipeline_model_parallel_world_size()
        self.stage = parallel_state.get_pipeline_model_parallel_rank()
        self.next = parallel_state.get_pipeline_model_parallel_next_rank()
        self.prev = parallel_state.get_pipeline_model_parallel_prev_rank()
        self.outbox: dict[tuple[bool, int, int], list[torch.Tensor]] = {}
        self.inbox: dict[tuple[bool, int, int], list[torch.Tensor]] = {}
        name = dist.distributed_c10d._get_process_group_name(self.group)
        if name not in _warmed_up:
            # A group's first batch_isend_irecv must involve all its ranks on NCCL (torch's
            # docs); the first exchange of a pipeline involves two stages. One collective first.
            dist.all_reduce(comm_tensor([0.0]), group=self.group)
            _warmed_up.add(name)

    def _peer(self, stage: int) -> int:
        return self.next if stage == (self.stage + 1) % self.stages else self.prev

    def post(self, key: tuple[bool, int, int], tensors) -> None:
        self.outbox[key] = [t.detach().to(_WIRE_DTYPE).contiguous() for t in tensors]

    def exchange(self, exchange: Exchange, shapes_of: Callable[[Message], list]) -> None:
        ops, received = [], []
        for message in exchange.sends:
            for wire in self.outbox.pop((message.backward, message.m, message.p)):
                ops.append(dist.P2POp(dist.isend, wire, self._peer(message.dst), self.group))
        for message in exchange.recvs:
            buffers = [comm_empty(shape, _WIRE_DTYPE) for shape in shapes_of(message)]
            ops += [dist.P2POp(dist.irecv, b, self._peer(message.src), self.group) for b in buffers]
            received.append((message, buffers))
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        for message, buffers in received:
            self.inbox[message.backward, message.m, message.p] = buffers

    def take(self, backward: bool, m: int, p: int) -> list[torch.Tensor]:
        return self.inbox.pop((backward, m, p))


def _grad_or_zeros(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor, device=comm_device())


class PipelineSchedule:
    """One training or evaluation step of M micro-batches on this stage."""

    def __init__(self, model, programs: list[PassProgram], batches: list[dict],
                 autocast: Callable, train: bool,
                 score: Callable[[Any, dict, dict], Any] | None = None,
                 backward_autocast: Callable = contextlib.nullcontext):
        self.model, self.programs, self.batches = model, programs, batches
        self.autocast, self.train, self.score = autocast, train, score
        self.backward_autocast = backward_autocast
        self.first = parallel_state.is_pipeline_first_stage(ignore_virtual=True)
        self.last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        self.wire = _Wire()
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
        unit = _Unit()
        if self.first:
            carry = None
            if p > 0:
                carry = tuple(t.requires_grad_(self._has_grad(program, p - 1))
                              for t in self.wire.take(False, m, p - 1))
                unit.inputs = list(carry)
            tic = time.perf_counter()
            with torch.set_grad_enabled(grad), self.autocast():
                pass_input = program.first_stage_input(p, carry)
            hidden, bias = pass_input.hidden, pass_input.key_log_w
        else:
            received = [t.requires_grad_(grad) for t in self.wire.take(False, m, p)]
            hidden, bias = received[0], (received[1] if program.has_key_bias(p) else None)
            unit.inputs = [hidden] + ([bias] if bias is not None else [])
            tic = time.perf_counter()
        unit.bias = bias
        with torch.set_grad_enabled(grad), self.autocast():
            out = program.backbone.run(hidden, program.position_ids(p), bias, final_norm=False)
            if self.last:
                result = program.last_stage_output(p, out)
        if not self.last:
            self.busy_s += time.perf_counter() - tic
            self.wire.post((False, m, p), [out] + ([bias] if bias is not None else []))
            unit.outputs = [out]
        elif not program.is_final(p):
            self.busy_s += time.perf_counter() - tic
            self.wire.post((False, m, p), result)
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
        if self.score is not None:  # the loss consumed output.logits: hand its parts on
            self.scores.append(self.score(output, batch, parts))
        unit.outputs = [loss / len(self.batches)]

    # ------------------------------------------------------------------ backward

    def backward(self, m: int, p: int) -> None:
        program = self.programs[m]
        unit = self.units.pop((m, p))
        if self.last and program.is_final(p):
            grads = [None]
        elif self.last:
            grads = self.wire.take(True, m, p + 1)
        else:
            grads = self.wire.take(True, m, p)
            if unit.bias is not None:
                grads, bias_grad = grads[:1], grads[1]
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
            sent = [_grad_or_zeros(unit.inputs[0])]
            if unit.bias is not None:
                total = _grad_or_zeros(unit.bias)
                if not self.last:  # the later stages' share arrived with the hidden gradient
                    total = total + bias_grad
                sent.append(total)
            self.wire.post((True, m, p), sent)
        elif p > 0 and self._has_grad(program, p - 1):
            self.wire.post((True, m, p), [_grad_or_zeros(leaf) for leaf in unit.inputs])

    def _shapes_of(self, message: Message) -> list[tuple[int, ...]]:
        """The shapes of the tensors of `message`, as its receiver (this stage) knows them."""
        program = self.programs[message.m]
        n, length, batch = program.passes[message.p], program.num_tokens, program.batch_size
        hidden = [(n * length, batch, program.backbone.hidden_size)]
        if not message.backward:
            if message.dst == 0:  # the carry of the last stage's pass p
                return list(program.carry_shapes(message.p))
            return hidden + ([(batch, n * length)] if program.has_key_bias(message.p) else [])
        if message.dst == self.wire.stages - 1:  # gradients of the carry that pass p started from
            return list(program.carry_shapes(message.p - 1))
        return hidden + ([(batch, n * length)] if self.units[message.m, message.p].bias is not None
                         else [])

    # ------------------------------------------------------------------ the step

    def run(self) -> PipelineResult:
        start = time.perf_counter()
        plan = plan_stage([len(prog.passes) for prog in self.programs],
                          [prog.first_pass_with_grad for prog in self.programs],
                          self.wire.stages, self.wire.stage, self.train)
        for event in plan:
            if isinstance(event, Exchange):
                self.wire.exchange(event, self._shapes_of)
            elif event.backward:
                self.backward(event.m, event.p)
            else:
                self.forward(event.m, event.p)
        assert not self.wire.outbox and not self.wire.inbox, "a message without its exchange"
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
        idle = comm_tensor([1.0 - self.busy_s / total_s], dtype=torch.float64)
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
    contexts for the forward and backward units (training/precision.py). score(output,
    batch, loss parts), on the last stage, gives each micro-batch's entry of `scores`."""
    programs = [model.program(b["tokens"], step=step, jacobi=jacobi) for b in batches]
    for program in programs:
        program.reuse_embeddings = False  # every unit is its own autograd graph
    return PipelineSchedule(model, programs, batches, autocast, train, score,
                            backward_autocast).run()
