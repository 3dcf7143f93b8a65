"""The training job under torchrun at tensor-parallel size 2 follows the single-process loss
trajectory, resumes from its own (sharded) checkpoint, and that checkpoint also resumes in a
single process (TP 2 -> TP 1 resharding by dist_checkpointing)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from distributed import free_port
from megatron_ponder.training.signals import EXIT_DONE
from megatron_ponder.training.trainer import Trainer
from tiny_runs import read_metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
LOSS_RTOL = 1e-4  # float32; TP reorders reductions, AdamW carries the difference forward


def torchrun(recipe: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), "-m", "megatron_ponder.train", str(recipe),
         "parallel.tensor_model_parallel_size=2", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_tp2_training_matches_tp1_and_resumes(tiny_run, tiny_recipe, tmp_path):
    single = tiny_run(tmp_path / "tp1", steps=STEPS, save_interval=3)
    assert Trainer(single).train() == EXIT_DONE

    recipe = tiny_recipe(tmp_path / "tp2.yaml", tmp_path / "tp2", steps=STEPS, save_interval=3)
    # A first job stops after step 3 (exit code 3 on every rank; torchrun itself reports a
    # non-zero code for that) ...
    first = torchrun(recipe, "train.exit_interval=3")
    assert "exit code 3: run the same command to resume" in first.stdout, first.stderr[-3000:]
    assert "exitcode  : 3" in first.stderr
    shutil.copytree(tmp_path / "tp2", tmp_path / "tp2_to_tp1")
    resharded = tiny_run(tmp_path / "tp2_to_tp1", steps=STEPS, save_interval=3)
    assert Trainer(resharded).train() == EXIT_DONE
    second = torchrun(recipe)  # ... and the next one resumes the sharded checkpoint
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 3" in second.stdout

    tp1 = read_metrics(tmp_path / "tp1")
    for other in ("tp2", "tp2_to_tp1"):
        losses = read_metrics(tmp_path / other)
        assert sorted(losses) == list(range(1, STEPS + 1))
        for step in tp1:
            assert abs(losses[step]["loss"] - tp1[step]["loss"]) <= LOSS_RTOL * tp1[step]["loss"], (other, step)
