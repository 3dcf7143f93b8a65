"""One trainer per output directory: a second trainer (or a batch job's preflight, or every
rank of a multi-process one) refuses with exit 2 naming the holder, and a SIGKILLed
trainer's lock does not block the next run (a Slurm requeue's next attempt)."""

from __future__ import annotations

import os
import socket

import pytest

from tiny_runs import launch_trainer, torchrun, wait_for
from megatron_ponder.config import ConfigError
from megatron_ponder.launch.preflight import preflight
from megatron_ponder.run.exit_codes import EXIT_DONE
from megatron_ponder.train import main


def test_a_second_trainer_refuses_and_a_killed_ones_lock_does_not_block(
        tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", out, steps=10_000, save_interval=10_000)
    first = launch_trainer(recipe)
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists(), first)
        config = (out / "config.yaml").read_bytes()
        holder = f"pid {first.pid} on host {socket.gethostname()}"
        # Without the lock this one would train a step into the same directory and save.
        assert main([str(recipe), "train.exit_interval=1", "train.save_interval=1"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another trainer" in err and holder in err
        with pytest.raises(ConfigError, match=holder):  # a batch job stops before srun
            preflight(str(recipe), [], nodes=1, procs_per_node=1)
        ranks = torchrun(recipe, "train.exit_interval=1", "train.save_interval=1", nproc=2)
        assert ranks.returncode != 0
        for rank in (0, 1):  # every rank exits on its own, none waits in a collective
            assert f"error (rank {rank}): train.output_dir=" in ranks.stderr
        assert "(checked by rank 0)" in ranks.stderr and holder in ranks.stderr
        assert (out / "config.yaml").read_bytes() == config
        assert not (out / "checkpoints").exists()
    finally:
        first.kill()
        first.wait()
    # The kernel dropped the killed trainer's lock; its file (and PID) stay behind and
    # mean nothing: the next attempt trains.
    assert holder in (out / ".trainer.lock").read_text()
    assert main([str(recipe), "train.steps=2"]) == EXIT_DONE
    assert (out / "checkpoints" / "step_0000002" / "metadata.json").exists()
    assert f"pid {os.getpid()} " in (out / ".trainer.lock").read_text()
