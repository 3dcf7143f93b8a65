"""The training job under torchrun at tensor-parallel size 2 follows the single-process loss
trajectory, resumes from its own (sharded) checkpoint, and checkpoints reshard both ways
(TP 2 -> one process -> TP 2, by dist_checkpointing)."""

import shutil

from megatron_ponder.run.exit_codes import EXIT_DONE
from megatron_ponder.training.trainer import Trainer
from tiny_runs import read_metrics, torchrun

STEPS = 6
LOSS_RTOL = 1e-4  # float32; TP reorders reductions, AdamW carries the difference forward
TP2 = "parallel.tensor_model_parallel_size=2"


def test_tp2_training_matches_tp1_and_resumes(tiny_run, tiny_recipe, tmp_path):
    single = tiny_run(tmp_path / "tp1", steps=STEPS, save_interval=3)
    assert Trainer(single).train() == EXIT_DONE

    recipe = tiny_recipe(tmp_path / "tp2.yaml", tmp_path / "tp2", steps=STEPS, save_interval=3)
    # A first job stops after step 3 (exit code 3 on every rank; torchrun itself reports a
    # non-zero code for that) ...
    first = torchrun(recipe, TP2, "train.exit_interval=3")
    assert "exit code 3: run the same command to resume" in first.stdout, first.stderr[-3000:]
    assert "exitcode  : 3" in first.stderr
    shutil.copytree(tmp_path / "tp2", tmp_path / "tp2_to_tp1")
    resharded = tiny_run(tmp_path / "tp2_to_tp1", steps=STEPS, save_interval=3)
    assert Trainer(resharded).train() == EXIT_DONE
    second = torchrun(recipe, TP2)  # ... and the next one resumes the sharded checkpoint
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 3" in second.stdout

    # ... and back: a single-process checkpoint continues at TP 2.
    Trainer(tiny_run(tmp_path / "tp1_to_tp2", steps=STEPS, save_interval=3, exit_interval=3)).train()
    back = tiny_recipe(tmp_path / "back.yaml", tmp_path / "tp1_to_tp2", steps=STEPS, save_interval=3)
    resumed = torchrun(back, TP2)
    assert resumed.returncode == 0 and "at step 3" in resumed.stdout, resumed.stderr[-3000:]

    tp1 = read_metrics(tmp_path / "tp1")
    for other in ("tp2", "tp2_to_tp1", "tp1_to_tp2"):
        losses = read_metrics(tmp_path / other)
        assert sorted(losses) == list(range(1, STEPS + 1))
        for step in tp1:
            assert abs(losses[step]["loss"] - tp1[step]["loss"]) <= LOSS_RTOL * tp1[step]["loss"], (other, step)
