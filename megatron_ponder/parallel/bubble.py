"""The analytic bubble fraction of the multi-pass pipeline schedule (parallel/pipeline.py).

The schedule is replayed with each unit's cost (one stage's share of one micro-batch's pass;
backward `backward_ratio` times the forward) and no communication time: a stage starts a unit
when it is free and the unit's input exists. Bubble = 1 - busy / (stages x makespan). For
equal passes, full gradients and M >= S it is (S-1) / (M P + S-1).
"""

from __future__ import annotations


def simulate_bubble(pass_costs: list[float], micro_batches: int, stages: int,
                    backward_ratio: float = 2.0, first_pass_with_grad: int = 0,
                    train: bool = True) -> float:
    """pass_costs[p]: one stage's forward time for one micro-batch's pass p."""
    passes, m_count, s_count = len(pass_costs), micro_batches, stages
    free = [0.0] * s_count
    done: dict[tuple[str, int, int, int], float] = {}
    order = [(m, p) for p in range(passes) for m in range(m_count)]
    for m, p in order:
        for s in range(s_count):
            ready = done["f", m, p, s - 1] if s > 0 else (done["f", m, p - 1, s_count - 1] if p > 0 else 0.0)
            done["f", m, p, s] = free[s] = max(free[s], ready) + pass_costs[p]
    busy = s_count * m_count * sum(pass_costs)
    if train:
        for m, p in reversed(order):
            if p < first_pass_with_grad:
                continue
            for s in reversed(range(s_count)):
                if s < s_count - 1:
                    ready = done["b", m, p, s + 1]
                elif p < passes - 1:
                    ready = done["b", m, p + 1, 0]
                else:
                    ready = done["f", m, p, s]
                cost = backward_ratio * pass_costs[p]
                done["b", m, p, s] = free[s] = max(free[s], ready) + cost
                busy += cost
    return 1.0 - busy / (s_count * max(free))
