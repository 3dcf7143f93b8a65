"""When each message of the multi-pass pipeline (parallel/pipeline.py) is exchanged.

NCCL completes a large send only once the peer runs the matching receive, ignores tags and
runs a pair's operations in issue order. A ring of stages whose sends wait for receives
deadlocks as soon as every stage holds a message the next one is not yet receiving (with
two stages: stage 0 sending micro-batch 1's pass while stage 1 sends micro-batch 0's result
back). So, as megatron-core's p2p_communication pairs a send with the receive that meets
it in one batch_isend_irecv, every message here is exchanged at a fixed point of a clock that
all ranks compute alike: the schedule's units are replayed with one tick per unit, and the
output of a unit that ends at tick T is sent, and received by its consumer, in the
exchange at T. Every rank posts its exchanges in increasing T, and an exchange at T holds
exactly the operations that its peers post in their exchange at T, so each exchange
completes once its peers reach it: no cycle of waits, whatever the message size. A message
received before it is needed (stage 0 receives pass p's results while still starting pass
p's other micro-batches) waits in the receiver's memory, which is where gloo buffered it before.

The clock is a replay, not a timer: stages still run as fast as their inputs allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """The output of unit (phase, m, p) on stage src, consumed on stage dst."""
    backward: bool
    m: int
    p: int
    src: int
    dst: int


@dataclass
class Exchange:
    sends: list[Message] = field(default_factory=list)
    recvs: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class Unit:
    backward: bool
    m: int
    p: int


def plan_stage(passes: list[int], first_with_grad: list[int], stages: int, stage: int,
               train: bool) -> list[Unit | Exchange]:
    """This stage's units and exchanges in execution order. passes[m]: micro-batch m's number
    of passes; first_with_grad[m]: its first pass with gradients (ponder.grad_passes)."""
    assert stages >= 2, "a pipeline needs two stages"
    order = [(m, p) for p in range(max(passes)) for m in range(len(passes)) if p < passes[m]]
    units = [Unit(False, m, p) for m, p in order]
    if train:
        units += [Unit(True, m, p) for m, p in reversed(order) if p >= first_with_grad[m]]
    end: dict[tuple[Unit, int], int] = {}  # (unit, stage) -> tick at which it ends
    messages: list[tuple[int, Message]] = []
    free = [0] * stages
    for unit in units:
        for s in (reversed(range(stages)) if unit.backward else range(stages)):
            producer = _producer(unit, s, stages, passes)
            ready = end[producer] if producer is not None else 0
            end[unit, s] = free[s] = max(free[s], ready) + 1
            if producer is not None:
                messages.append((ready, Message(unit.backward, producer[0].m, producer[0].p,
                                                producer[1], s)))
    # Execution order on this stage: the exchange at T comes after the unit ending at T and
    # before any unit starting at T; (tick, 0) sorts an exchange before a unit of that tick.
    events: list[tuple[int, int, Unit | Exchange]] = [(end[u, stage] - 1, 1, u) for u in units]
    exchanges: dict[int, Exchange] = {}
    for tick, message in messages:
        if stage in (message.src, message.dst):
            exchange = exchanges.setdefault(tick, Exchange())
            (exchange.sends if message.src == stage else exchange.recvs).append(message)
    events += [(tick, 0, exchange) for tick, exchange in exchanges.items()]
    events.sort(key=lambda event: (event[0], event[1]))
    return [event for _, _, event in events]


def _producer(unit: Unit, s: int, stages: int, passes: list[int]) -> tuple[Unit, int] | None:
    """The unit and stage whose output unit `unit` on stage s consumes, if any."""
    m, p = unit.m, unit.p
    if not unit.backward:
        if s > 0:
            return Unit(False, m, p), s - 1  # the hidden states (and key bias) of this pass
        return (Unit(False, m, p - 1), stages - 1) if p > 0 else None  # the carry of pass p-1
    if s < stages - 1:
        return Unit(True, m, p), s + 1  # gradients of the hidden states sent on
    if p < passes[m] - 1:
        return Unit(True, m, p + 1), 0  # gradients of the carry, from pass p+1's first stage
    return None  # the loss: its backward starts here
