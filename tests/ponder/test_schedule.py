"""Proof 7 (single process): J is a pure function of (seed, step)."""

import subprocess
import sys

from megatron_ponder.ponder.method import jacobi_iterations


def draws(seed, steps=200, choices=(2, 3)):
    return [jacobi_iterations(seed, step, list(choices)) for step in range(steps)]


def test_same_seed_and_step_same_j_after_restart():
    code = "from megatron_ponder.ponder.method import jacobi_iterations as j; " \
           "print([j(11, s, [2, 3]) for s in range(200)])"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == str(draws(11))


def test_draw_is_uniform_over_choices_and_depends_on_seed():
    sample = draws(11, steps=2000)
    share_of_3 = sample.count(3) / len(sample)
    assert abs(share_of_3 - 0.5) < 0.05  # binomial std 0.011 at n 2000
    assert draws(11) != draws(12)
    assert set(draws(5, choices=(1, 4, 9))) == {1, 4, 9}
