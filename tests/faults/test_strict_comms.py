"""PONDER_STRICT_COMMS=1: NCCL's point-to-point rules on gloo (parallel/strict_comms.py) turn
what would hang or mismatch on a GPU cluster into an error on CPU, within the timeout.

- a send waits for the peer's receive: two ranks that both send before receiving (the
  pattern of issue 20's defect 4) fail, at 4 bytes as at 8 MB (above NCCL's buffer);
  without the mode gloo runs them;
- tags are ignored: messages of a pair are matched in issue order, as NCCL matches them;
- the pipeline at PP 2 (PonderLM-3, 3 micro-batches) runs under the mode with a short
  timeout: before its messages were paired (defect 4) it stopped at that timeout;
- a bad value of the variable is refused, naming it.
"""

import contextlib
import datetime

import pytest
import torch
import torch.distributed as dist

from distributed import STRICT_COMMS, run_distributed
from factories import tiny_config
from megatron_ponder.config import ConfigError
from megatron_ponder.parallel.strict_comms import requested

TIMEOUT_S = 20  # a detected deadlock ends here, not after minutes (margin for a loaded machine)
PROBE_TIMEOUT_S = 5  # probes without computation: ranks meet at once


SIZES = {"4B": 1, "8MB": 2 << 20}  # 8 MB: above NCCL's internal buffering


def _probes(rank):
    """Each probe on a fresh group with a short timeout (the rendezvous is behind us), so a
    send left pending by one probe cannot meet the next probe's receive."""
    results = {}
    for name, numel in SIZES.items():  # each rank sends to the other, then receives
        group = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=PROBE_TIMEOUT_S))
        out, into = torch.full((numel,), float(rank)), torch.empty(numel)
        try:
            work = dist.isend(out, 1 - rank, group=group)
            dist.recv(into, 1 - rank, group=group)
            work.wait()
            results[name] = float(into[0])
        except RuntimeError as err:
            results[name] = str(err)
    # Rank 0 sends A (tag 1) then B (tag 2); rank 1 receives tag 2 first.
    group = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=60))
    if rank == 0:
        dist.send(torch.tensor([1.0]), 1, group=group, tag=1)
        dist.send(torch.tensor([2.0]), 1, group=group, tag=2)
    else:
        first, second = torch.empty(1), torch.empty(1)
        work = dist.irecv(first, 0, group=group, tag=2)
        dist.recv(second, 0, group=group, tag=1)
        work.wait()
        results["tags"] = [first.item(), second.item()]
    return results


# Plain gloo for the comparison, also when the whole suite runs under PONDER_STRICT_COMMS=1.
PLAIN_GLOO = {"PONDER_STRICT_COMMS": "0"}


@pytest.fixture(scope="module")
def probes():
    return {"gloo": run_distributed(_probes, 2, env=PLAIN_GLOO, timeout_s=60),
            "strict": run_distributed(_probes, 2, env=STRICT_COMMS, timeout_s=60)}


@pytest.mark.parametrize("size", SIZES)
def test_a_send_waits_for_its_receive(probes, size):
    assert [rank[size] for rank in probes["gloo"]] == [1.0, 0.0]  # gloo's isend lets it pass
    for rank in probes["strict"]:
        assert "PONDER_STRICT_COMMS" in rank[size] and "did not complete" in rank[size], rank[size]


def test_tags_are_ignored(probes):
    # gloo matches by tag; NCCL (and the strict mode) in issue order.
    assert probes["gloo"][1]["tags"] == [2.0, 1.0]
    assert probes["strict"][1]["tags"] == [1.0, 2.0]


def _pp2_step(rank):
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.parallel.pipeline import pipeline_step

    cfg = tiny_config("ponderlm3", k=3, overrides=["parallel.pipeline_model_parallel_size=2",
                                                   f"parallel.distributed_timeout_s={TIMEOUT_S}"])
    initialize_parallel(cfg)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(3)
    batches = [{"tokens": torch.randint(0, 64, (2, 8), generator=gen),
                "labels": torch.randint(0, 64, (2, 8), generator=gen),
                "loss_mask": torch.ones(2, 8)} for _ in range(3)]
    result = pipeline_step(model, batches, 1, contextlib.nullcontext)
    return result.loss, len(result.pass_slots[0])


def test_pipeline_pp2_runs_under_nccl_rules():
    """Defect 4: stage 0 sent micro-batch 1's pass before receiving micro-batch 0's result
    while stage 1 sent that result: a cyclic wait once sends wait for receives."""
    (loss0, passes), (loss1, _) = run_distributed(_pp2_step, 2, env=STRICT_COMMS, timeout_s=TIMEOUT_S)
    assert loss0 == loss1 and passes > 3  # PonderLM-3 at K 3: several passes round the ring
    assert 0.0 < loss0 < 10.0


def test_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv("PONDER_STRICT_COMMS", "yes")
    with pytest.raises(ConfigError, match="PONDER_STRICT_COMMS='yes': expected 1"):
        requested()
    monkeypatch.setenv("PONDER_STRICT_COMMS", "1")
    assert requested()
