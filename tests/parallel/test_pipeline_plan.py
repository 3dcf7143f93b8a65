"""The pipeline's exchange plan (parallel/pipeline_plan.py): without running a process, every
layout's plan pairs each send with a receive at the same point on both ranks, every
message that a unit consumes is received before that unit, and a replay in which each
exchange waits for all its peers (NCCL's rule, no buffering) finishes."""

import itertools

import pytest

from megatron_ponder.parallel.pipeline_plan import Exchange, Unit, plan_stage

LAYOUTS = [  # (passes per micro-batch, first pass with gradients per micro-batch, stages)
    ([1, 1, 1], [0, 0, 0], 2), ([3, 3, 3], [0, 0, 0], 2), ([3, 3, 3], [1, 1, 1], 2),
    ([4, 2, 3, 1], [0, 0, 2, 0], 3), ([3, 3], [0, 0], 4), ([2] * 5, [0] * 5, 4), ([3], [2], 4),
]


def replay(plans: list[list]) -> int:
    """Run every stage's plan, an exchange completing only when every peer it names has
    reached its own exchange of the same messages. Returns the number of exchanges done."""
    position, done = [0] * len(plans), 0
    while any(pos < len(plan) for pos, plan in zip(position, plans)):
        progressed = False
        for s, plan in enumerate(plans):
            while position[s] < len(plan) and isinstance(plan[position[s]], Unit):
                position[s] += 1
                progressed = True
        current = {s: plan[position[s]] for s, plan in enumerate(plans) if position[s] < len(plan)}
        for s, exchange in current.items():
            peers = {m.dst for m in exchange.sends} | {m.src for m in exchange.recvs}
            if all(p in current and _matches(exchange, current[p], s, p) for p in peers):
                position[s] += 1
                done += 1
                progressed = True
        assert progressed, f"a cycle of waits: {current}"
    return done


def _matches(mine: Exchange, theirs: Exchange, me: int, peer: int) -> bool:
    return ([m for m in mine.sends if m.dst == peer] == [m for m in theirs.recvs if m.src == me]
            and [m for m in mine.recvs if m.src == peer] == [m for m in theirs.sends if m.dst == me])


@pytest.mark.parametrize("passes,first,stages", LAYOUTS)
@pytest.mark.parametrize("train", [True, False])
def test_every_send_meets_its_receive(passes, first, stages, train):
    plans = [plan_stage(passes, first, stages, s, train) for s in range(stages)]
    assert replay(plans) == sum(isinstance(e, Exchange) for plan in plans for e in plan)
    for s, plan in enumerate(plans):
        received = set()
        for event in plan:
            if isinstance(event, Exchange):
                received |= {(m.backward, m.m, m.p) for m in event.recvs}
            else:
                needed = _input_of(event, s, stages, passes)
                assert needed is None or needed in received, (s, event)
        units = [e for e in plan if isinstance(e, Unit)]
        forward = [(u.m, u.p) for u in units if not u.backward]
        assert forward == [(m, p) for p, m in itertools.product(range(max(passes)), range(len(passes)))
                           if p < passes[m]]  # the GPipe-over-passes order is unchanged
        backward = [(u.m, u.p) for u in units if u.backward]
        assert backward == ([mp for mp in reversed(forward) if mp[1] >= first[mp[0]]] if train else [])


def _input_of(unit: Unit, s: int, stages: int, passes: list[int]):
    if not unit.backward:
        return (False, unit.m, unit.p) if s > 0 else ((False, unit.m, unit.p - 1) if unit.p else None)
    if s < stages - 1:
        return True, unit.m, unit.p
    return (True, unit.m, unit.p + 1) if unit.p < passes[unit.m] - 1 else None
