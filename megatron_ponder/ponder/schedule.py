"""Deterministic pass-schedule choices.

J (the number of Jacobi iterations) is drawn from (seed, step) alone, never from a global
RNG, so every rank draws the same J and a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def jacobi_iterations(seed: int, step: int, choices: list[int]) -> int:
    """Uniform draw from `choices`, a pure function of (seed, step)."""
    rng = np.random.default_rng([int(seed), int(step)])
    return int(choices[int(rng.integers(len(choices)))])


def first_pass_with_grad(total_passes: int, grad_passes: int) -> int:
    """Index of the first pass that keeps autograd when only the last `grad_passes` passes
    do (0 keeps every pass). The truncated variant trades exact gradients through the
    Jacobi solve for memory and time; it is a measured option, not the default."""
    return 0 if grad_passes == 0 else max(0, total_passes - grad_passes)
