"""The "megatron" engine's GPU path (megatron-core DDP + distributed optimizer), on one GPU:
the same losses as the plain engine, and checkpoints that move between the two. Skipped
without CUDA (megatron's DDP and distributed optimizer allocate on "cuda")."""

import pytest
import torch

from megatron_ponder.training import trainer as trainer_module
from megatron_ponder.training.signals import EXIT_DONE
from megatron_ponder.training.trainer import Trainer
from tiny_runs import read_metrics, resume_from

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="megatron-core DDP / distributed optimizer need CUDA")
STEPS, SAVE = 6, 3
LOSS_RTOL = 1e-5  # fp32 on one GPU: the same arithmetic up to reduction order


def with_megatron_engine(monkeypatch):
    from megatron_ponder.training.engines.megatron_ddp import MegatronEngine

    monkeypatch.setattr(trainer_module, "build_engine", MegatronEngine)


def test_distributed_optimizer_matches_the_plain_engine_and_shares_checkpoints(
        tiny_run, tmp_path, monkeypatch):
    run = lambda name: tiny_run(tmp_path / name, steps=STEPS, save_interval=SAVE,  # noqa: E731
                                precision="fp32")
    assert Trainer(run("plain")).train() == EXIT_DONE
    resume_from(tmp_path / "plain", tmp_path / "plain_to_megatron", SAVE)
    with monkeypatch.context() as patch:
        with_megatron_engine(patch)
        assert Trainer(run("megatron")).train() == EXIT_DONE
        assert Trainer(run("plain_to_megatron")).train() == EXIT_DONE
    resume_from(tmp_path / "megatron", tmp_path / "megatron_to_plain", SAVE)
    assert Trainer(run("megatron_to_plain")).train() == EXIT_DONE

    plain = read_metrics(tmp_path / "plain")
    for name, steps in (("megatron", range(1, STEPS + 1)),
                        ("plain_to_megatron", range(SAVE + 1, STEPS + 1)),
                        ("megatron_to_plain", range(SAVE + 1, STEPS + 1))):
        other = read_metrics(tmp_path / name)
        for step in steps:
            assert abs(other[step]["loss"] - plain[step]["loss"]) <= LOSS_RTOL * plain[step]["loss"], (name, step)
