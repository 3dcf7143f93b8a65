"""Resume exactness: 2N steps uninterrupted == N steps, stop, resume for N (losses and every
piece of saved state), as Megatron's resume test does, plus the state diff key by key."""

import torch

from tiny_runs import read_metrics
from megatron_ponder.run.checkpoint_write import Checkpointer
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.training.trainer import Trainer

N = 3


def load_everything(cfg, step):
    """Model, optimizer, scheduler, RNG and train state of the checkpoint at `step`."""
    trainer = Trainer(cfg)  # resumes from the newest checkpoint ...
    common = trainer.checkpointer.load(step, trainer.engine, trainer.scheduler)
    return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(), "train_state": common["train_state"],
            "rng": common["rng"], "adam_step": common["adam_step"]}


def assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif hasattr(a, "shape"):  # numpy RNG state
        assert (a == b).all(), path
    else:
        assert a == b, path


def test_stop_and_resume_repeats_the_uninterrupted_run(tiny_run, tmp_path):
    full_cfg = tiny_run(tmp_path / "full", steps=2 * N, save_interval=N)
    assert Trainer(full_cfg).train() == EXIT_DONE

    split_cfg = tiny_run(tmp_path / "split", steps=2 * N, save_interval=N, exit_interval=N)
    assert Trainer(split_cfg).train() == EXIT_REQUEUE
    assert Checkpointer(tmp_path / "split" / "checkpoints", 5).latest_step() == N
    assert Trainer(split_cfg).train() == EXIT_DONE

    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert sorted(full) == sorted(split) == list(range(1, 2 * N + 1))
    for step in full:  # bit-identical: same data, same J, same optimizer state
        assert split[step]["loss"] == full[step]["loss"], step
        assert split[step]["jacobi"] == full[step]["jacobi"], step
    assert len({full[s]["jacobi"] for s in full}) == 2  # both J values were exercised

    for step in (N, 2 * N):
        assert_same(load_everything(full_cfg, step), load_everything(split_cfg, step))
    # The final checkpoint really moved: step N and step 2N differ.
    a, b = load_everything(full_cfg, N), load_everything(full_cfg, 2 * N)
    assert not torch.equal(a["model"]["decoder.output_layer.weight"],
                           b["model"]["decoder.output_layer.weight"])
    assert b["train_state"]["step"] == 2 * N and b["scheduler"]["last_epoch"] == 2 * N
