"""How a batch script reads one attempt: torchrun's own exit code is 1 for a crash and for a
stop alike, so the ranks' recorded codes and the script's stop flag decide."""

import pytest

from megatron_ponder.launch.outcome import BAD_INPUT, COMPLETED, FAILED, REQUEUE, decide


@pytest.mark.parametrize("launcher_rc, codes, stop_requested, expected", [
    (0, {0: 0, 1: 0}, False, COMPLETED),
    (0, {0: 0, 1: 0}, True, COMPLETED),          # the stop came after the last step
    (1, {0: 3, 1: 3}, False, REQUEUE),           # a trainer stop (wall time, exit_interval)
    (1, {0: 3, 1: 3}, True, REQUEUE),            # the forwarded SIGUSR1
    (1, {0: 3}, False, REQUEUE),                 # rank 1 ended by srun after the collective save
    (1, {}, True, REQUEUE),                      # signalled before the handlers existed
    (1, {}, False, FAILED),                      # killed (OOM, segfault): nothing recorded
    (1, {0: 1, 1: 3}, True, FAILED),             # a crash is not hidden by a stop
    (1, {0: 0, 1: 3}, False, FAILED),            # one rank finished, the other did not
    (1, {0: 2, 1: 2}, False, BAD_INPUT),
    (1, {0: 2, 1: 3}, True, BAD_INPUT),
    (137, {}, False, FAILED),
    (2, {}, False, BAD_INPUT),                   # the sweep tool refused its sweep file
    (3, {0: 3}, False, REQUEUE),                 # the sweep tool's training run stopped
    (3, {}, True, REQUEUE),
    (3, {0: 1}, False, FAILED),
])
def test_decide(launcher_rc, codes, stop_requested, expected):
    assert decide(launcher_rc, codes, stop_requested) == expected


@pytest.mark.parametrize("launcher_rc, codes, expected", [
    (1, {}, REQUEUE),             # torchrun's 1: its ranks died of SIGTERM (143) in start-up
    (143, {}, REQUEUE),           # the launcher itself
    (143, {0: 3}, REQUEUE),       # one rank had its handler, the other not yet
    (1, {0: 1}, FAILED),          # a crash stays a crash
    (1, {0: 2, 1: 3}, BAD_INPUT),
])
def test_sigterm_before_any_checkpoint_of_the_attempt_is_a_stop(launcher_rc, codes, expected):
    assert decide(launcher_rc, codes, False, terminated_before_save=True) == expected
