"""The training job at pipeline-parallel size 2 (torchrun, two gloo processes) follows the
single-process loss trajectory for ponderlm3 and vanilla, and its checkpoints reshard:
PP 2 -> 1 process and 1 process -> PP 2 continue with the same losses. The PP-2 jobs run
under NCCL's point-to-point rules (PONDER_STRICT_COMMS=1, TORCH_DISTRIBUTED_DEBUG=DETAIL)."""

import shutil

from megatron_ponder.run.exit_codes import EXIT_DONE
from megatron_ponder.training.trainer import Trainer
from distributed import STRICT_COMMS
from tiny_runs import read_metrics, torchrun

STEPS = 6
LOSS_RTOL = 1e-4  # float32; AdamW carries rounding differences forward over the steps
PP2 = "parallel.pipeline_model_parallel_size=2"


def assert_same_losses(reference: dict, other: dict, label: str) -> None:
    assert sorted(other) == list(range(1, STEPS + 1)), label
    for step, record in reference.items():
        assert abs(other[step]["loss"] - record["loss"]) <= LOSS_RTOL * record["loss"], (label, step)


def test_pp2_training_matches_single_process_and_reshards(tiny_run, tiny_recipe, tmp_path):
    single = tiny_run(tmp_path / "single", steps=STEPS, save_interval=3)
    assert Trainer(single).train() == EXIT_DONE
    reference = read_metrics(tmp_path / "single")

    # PP 2 stops after step 3, its checkpoint resumes in one process, and the PP-2 job
    # resumes it too.
    recipe = tiny_recipe(tmp_path / "pp2.yaml", tmp_path / "pp2", steps=STEPS, save_interval=3)
    first = torchrun(recipe, PP2, "train.exit_interval=3", env_extra=STRICT_COMMS)
    assert "exitcode  : 3" in first.stderr, first.stdout[-2000:] + first.stderr[-3000:]
    shutil.copytree(tmp_path / "pp2", tmp_path / "pp2_to_single")
    assert Trainer(tiny_run(tmp_path / "pp2_to_single", steps=STEPS, save_interval=3)).train() == EXIT_DONE
    second = torchrun(recipe, PP2, env_extra=STRICT_COMMS)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "at step 3" in second.stdout and "bubble" in second.stdout

    # One process stops after step 3; the PP-2 job resumes its checkpoint.
    to_pp2 = tiny_run(tmp_path / "single_to_pp2", steps=STEPS, save_interval=3, exit_interval=3)
    Trainer(to_pp2).train()
    back = tiny_recipe(tmp_path / "back.yaml", tmp_path / "single_to_pp2", steps=STEPS, save_interval=3)
    resumed = torchrun(back, PP2, env_extra=STRICT_COMMS)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    for label in ("pp2", "pp2_to_single", "single_to_pp2"):
        assert_same_losses(reference, read_metrics(tmp_path / label), label)


def test_pp2_vanilla_matches_single_process(tiny_run, tiny_recipe, tmp_path):
    assert Trainer(tiny_run(tmp_path / "single", method="vanilla", steps=STEPS)).train() == EXIT_DONE
    recipe = tiny_recipe(tmp_path / "pp2.yaml", tmp_path / "pp2", method="vanilla", steps=STEPS)
    run = torchrun(recipe, PP2, env_extra=STRICT_COMMS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert_same_losses(read_metrics(tmp_path / "single"), read_metrics(tmp_path / "pp2"), "vanilla")
