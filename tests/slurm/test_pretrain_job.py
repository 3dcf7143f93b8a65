"""slurm/pretrain.sbatch on a real two-node Slurm: the demo recipe (shrunk by overrides) runs on
2 nodes x 1 CPU process (gloo, tensor parallel 2 across the nodes), survives a preemption
signal by saving, requeueing and resuming to the same final loss as an uninterrupted run, and
wrong use fails fast with the reason in the job log."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from slurm_jobs import ROOT, free_port

pytestmark = pytest.mark.slurm

SCRIPT = "slurm/pretrain.sbatch"
RECIPE = "recipes/demo_cpu.yaml"
STEPS = 24
# The trainer's resume is bit-exact (tests/training/test_resume.py); JSON keeps float64 exact.
# The tolerance only allows float32 rounding of one reduction order should gloo ever vary it.
LOSS_RTOL = 1e-6
JOB_TIMEOUT_S = 600  # a 2-core machine shared with other work; a quiet one needs ~30 s a job


def tiny_overrides(data: dict, output_dir: Path) -> list[str]:
    """The demo recipe at test size: hidden 32, sequence 16, 4 micro-batches per step."""
    return [
        "model.vocab_size=512", "model.hidden_size=32", "model.max_position_embeddings=32",
        f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['prefix']}]",
        "data.split=90,10,0", "data.seq_length=16", f"data.cache_dir={output_dir}_cache",
        f"train.output_dir={output_dir}", f"train.steps={STEPS}", "train.micro_batch_size=2",
        "train.global_batch_size=8", "train.log_interval=1", "train.eval_interval=1000",
        "train.eval_batches=2", "train.save_interval=12",
        "logging.wandb=disabled", "logging.tensorboard=false",
        "parallel.tensor_model_parallel_size=2",
    ]


def submit_pretrain(slurm, data, tmp: Path, name: str, env: dict | None = None):
    output_dir = tmp / name
    job = slurm.submit(SCRIPT, [RECIPE, *tiny_overrides(data, output_dir)], tmp / f"{name}.log",
                       sbatch=["--nodes=2", f"--job-name={name}"],
                       env={"PONDER_RDZV_PORT": str(free_port()), **(env or {})})
    return job, output_dir


def metrics(output_dir: Path, kind: str) -> dict[int, dict]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == kind}


def rank_records(output_dir: Path, job_id: str, attempt: int) -> list[dict]:
    directory = output_dir / "slurm" / job_id / "exit_codes" / f"attempt-{attempt}"
    return [json.loads(p.read_text()) for p in sorted(directory.glob("rank-*.json"))]


@pytest.fixture(scope="module")
def uninterrupted(slurm, slurm_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    job, output_dir = submit_pretrain(slurm, slurm_data, tmp, "uninterrupted")
    return job, slurm.wait(job, JOB_TIMEOUT_S), output_dir


def test_two_node_job_completes_with_checkpoint_logs_and_both_ranks(uninterrupted):
    job, info, output_dir = uninterrupted
    log = job.text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), log
    # Both ranks ran, one on each node, and finished (their own exit codes, past torchrun).
    ranks = rank_records(output_dir, job.id, attempt=0)
    assert [(r["rank"], r["exit_code"], r["host"]) for r in ranks] == [(0, 0, "n1"), (1, 0, "n2")]
    tracker = output_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert tracker.read_text().strip() == str(STEPS)
    assert (output_dir / "checkpoints" / f"step_{STEPS:07d}").is_dir()
    assert sorted(metrics(output_dir, "train")) == list(range(1, STEPS + 1))
    assert metrics(output_dir, "final")[STEPS]["loss"] > 0
    assert f"step {STEPS:>6d}/{STEPS}" in log and "outcome: completed" in log


def test_preempted_job_requeues_resumes_and_ends_with_the_same_loss(slurm, slurm_data, tmp_path,
                                                                     uninterrupted):
    _, _, reference_dir = uninterrupted
    job, output_dir = submit_pretrain(slurm, slurm_data, tmp_path, "preempted")
    # Slurm's warning signal (--signal=B:USR1@...) by hand, once training is under way.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (output_dir / "metrics.jsonl").exists() or 2 not in metrics(output_dir, "train"):
        state = slurm.info(job)["JobState"]
        assert time.monotonic() < deadline and state in ("PENDING", "RUNNING"), job.text()
        time.sleep(0.2)
    slurm.run("scancel", "--batch", "--signal=USR1", job.id)
    info = slurm.wait(job, JOB_TIMEOUT_S)
    log = job.text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log

    stopped = re.search(r"stopping at step (\d+): received SIGUSR1", log)
    assert stopped, log
    saved = int(stopped.group(1))
    assert 2 <= saved < STEPS
    # The first attempt: every rank saved and stopped (exit 3), the script requeued ...
    assert [r["exit_code"] for r in rank_records(output_dir, job.id, 0)] == [3, 3]
    assert "outcome: requeue" in log and "requeueing (restart 1 of at most 10)" in log
    # ... and the second resumed from that step with no user action and completed.
    assert f"resumed from {output_dir}/checkpoints/step_{saved:07d} at step {saved}" in log
    assert [r["exit_code"] for r in rank_records(output_dir, job.id, 1)] == [0, 0]

    reference, resumed = metrics(reference_dir, "train"), metrics(output_dir, "train")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step]["loss"] == pytest.approx(reference[step]["loss"], rel=LOSS_RTOL), step
    final = metrics(output_dir, "final")[STEPS]["loss"]
    assert final == pytest.approx(metrics(reference_dir, "final")[STEPS]["loss"], rel=LOSS_RTOL)


def test_signal_during_start_up_is_kept_and_never_completes(slurm, slurm_data, tmp_path):
    """SIGUSR1 before any trainer exists: the script launches nothing and asks for a requeue;
    with PONDER_MAX_RESTARTS=0 the job ends as stopped (exit 3), not as completed."""
    job, output_dir = submit_pretrain(slurm, slurm_data, tmp_path, "early",
                                      env={"PONDER_MAX_RESTARTS": "0"})
    slurm.wait(job, JOB_TIMEOUT_S, until=lambda info: info["JobState"] == "RUNNING")
    slurm.run("scancel", "--batch", "--signal=USR1", job.id)
    info = slurm.wait(job, JOB_TIMEOUT_S)
    log = job.text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "3:0", "0"), log
    assert "not launched: a stop was requested during start-up" in log
    assert "reached PONDER_MAX_RESTARTS=0" in log
    assert not (output_dir / "checkpoints").exists()


@pytest.mark.parametrize("case", ["missing_recipe", "layout", "unwritable_output"])
def test_wrong_use_fails_fast_with_the_reason_in_the_job_log(slurm, slurm_data, tmp_path, case):
    overrides = tiny_overrides(slurm_data, tmp_path / "run")
    recipe, nodes, expected = RECIPE, 2, None
    if case == "missing_recipe":
        recipe = "recipes/no_such_recipe.yaml"
        expected = f"recipe file {recipe} does not exist"
    elif case == "layout":  # 1 node x 1 process cannot hold tensor parallel 2
        nodes, expected = 1, ("the job has 1 processes (1 node(s) x 1 per node), but "
                              "parallel.tensor_model_parallel_size=2")
    else:
        overrides.append(f"train.output_dir={RECIPE}/run")  # below a file: cannot be created
        expected = f"train.output_dir='{ROOT / RECIPE}/run' is not writable"
    start = time.monotonic()
    job = slurm.submit(SCRIPT, [recipe, *overrides], tmp_path / "job.log",
                       sbatch=[f"--nodes={nodes}", f"--job-name={case}"])
    info = slurm.wait(job, JOB_TIMEOUT_S)
    log = job.text()
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), log
    assert expected in log
    assert "preflight failed (the error is above); nothing was started" in log
    assert "srun" not in log and not (tmp_path / "run").exists()
    print(f"{case}: failed after {time.monotonic() - start:.1f} s")
