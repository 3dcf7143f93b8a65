"""initialize_parallel is called by every Trainer; repeating it for the same layout must not
create new process groups (gloo keeps each group's threads alive: a test session once
reached 7,500 threads and a load average of 900 from this leak)."""

import os

from factories import tiny_config
from megatron_ponder.parallel import initialize_parallel


def threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_reinitialising_the_same_layout_creates_no_threads():
    cfg = tiny_config()
    initialize_parallel(cfg)
    before = threads()
    for _ in range(5):
        initialize_parallel(cfg)
    assert threads() == before
