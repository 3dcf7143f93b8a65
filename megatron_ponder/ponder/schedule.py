"""Deterministic pass-schedule choices.

J (the number of Jacobi iterations) is drawn from (seed, step) alone, never from a global
RNG, so every rank draws the same J and a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


def jacobi_iterations(seed: int, step: int, choices: list[int]) -> int:
    """Uniform draw from `choices`, a pure function of (seed, step)."""
    rng = np.random.default_rng([int(seed), int(step)])
    return int(choices[int(rng.integers(len(choices)))])


class GradientWindow:
    """Run all but the last `grad_passes` passes without autograd (0 keeps every pass).

    The truncated variant trades exact gradients through the Jacobi solve for memory
    and time; it is a measured option, not the default.
    """

    def __init__(self, total_passes: int, grad_passes: int):
        self.first_with_grad = 0 if grad_passes == 0 else max(0, total_passes - grad_passes)
        self.index = 0

    @contextmanager
    def next_pass(self):
        enabled = torch.is_grad_enabled() and self.index >= self.first_with_grad
        self.index += 1
        with torch.set_grad_enabled(enabled):
            yield
