"""A stop request that reaches one rank stops them all at the same step: the checkpoint save
that follows is collective, and ranks a step apart would wait on each other forever."""

from distributed import run_distributed
from megatron_ponder.training.trainer import agree_on_stop


def _agree(rank: int) -> list:
    first = agree_on_stop("received SIGUSR1" if rank == 1 else None)
    second = agree_on_stop(None)
    return [first, second]


def test_one_rank_stopping_stops_every_rank():
    assert run_distributed(_agree, 2) == [["another rank is stopping", None],
                                          ["received SIGUSR1", None]]


def test_a_single_process_keeps_its_own_decision():
    assert agree_on_stop(None) is None
    assert agree_on_stop("wall time") == "wall time"
