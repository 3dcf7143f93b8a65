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
def pretrain_jobs(slurm, slurm_data, tmp_path_factory):
    """The same recipe twice at once (each job takes 1 of the 2 CPUs of both nodes): one runs
    undisturbed, the other gets Slurm's warning signal (--signal=B:USR1@...) by hand once
    its training is under way."""
    tmp = tmp_path_factory.mktemp("pretrain")
    uninterrupted = submit_pretrain(slurm, slurm_data, tmp, "uninterrupted")
    preempted, output_dir = submit_pretrain(slurm, slurm_data, tmp, "preempted")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (output_dir / "metrics.jsonl").exists() or 2 not in metrics(output_dir, "train"):
        state = slurm.info(preempted)["JobState"]
        assert time.monotonic() < deadline and state in ("PENDING", "RUNNING"), preempted.text()
        time.sleep(0.2)
    slurm.run("scancel", "--batch", "--signal=USR1", preempted.id)
    return {"uninterrupted": uninterrupted, "preempted": (preempted, output_dir)}


def test_two_node_job_completes_with_checkpoint_logs_and_both_ranks(slurm, pretrain_jobs):
    job, output_dir = pretrain_jobs["uninterrupted"]
    info = slurm.wait(job, JOB_TIMEOUT_S)
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


def test_preempted_job_requeues_resumes_and_ends_with_the_same_loss(slurm, pretrain_jobs):
    job, output_dir = pretrain_jobs["preempted"]
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

    reference_job, reference_dir = pretrain_jobs["uninterrupted"]
    slurm.wait(reference_job, JOB_TIMEOUT_S)
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
    # After the script's first line (its traps are set), while it checks the job.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while f"job {job.id} attempt 0 on" not in job.text():
        state = slurm.info(job)["JobState"]
        assert time.monotonic() < deadline and state in ("PENDING", "RUNNING"), job.text()
        time.sleep(0.1)
    slurm.run("scancel", "--batch", "--signal=USR1", job.id)
    info = slurm.wait(job, JOB_TIMEOUT_S)
    log = job.text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "3:0", "0"), log
    assert "not launched: a stop was requested during start-up" in log
    assert "reached PONDER_MAX_RESTARTS=0" in log
    assert not (output_dir / "checkpoints").exists()


def test_wrong_use_fails_fast_with_the_reason_in_the_job_log(slurm, slurm_data, tmp_path):
    """A missing recipe, 1 node x 1 process for tensor parallel 2, an output directory that
    cannot be created: each job ends at once with exit code 2 and the reason, before srun."""
    overrides = tiny_overrides(slurm_data, tmp_path / "run")
    cases = {
        "missing_recipe": (["recipes/no_such_recipe.yaml", *overrides], 2,
                           "recipe file recipes/no_such_recipe.yaml does not exist"),
        "layout": ([RECIPE, *overrides], 1,
                   "this job runs 1 node(s) x 1 process(es) per node (sbatch --nodes / "
                   "--gpus-per-node, or PONDER_NPROC_PER_NODE): world size 1 (nodes x tasks per "
                   "node) is not divisible by"),
        # below a file: cannot be created
        "unwritable_output": ([RECIPE, *overrides, f"train.output_dir={RECIPE}/run"], 2,
                              f"train.output_dir='{ROOT / RECIPE}/run' is not writable"),
    }
    jobs = {case: slurm.submit(SCRIPT, args, tmp_path / f"{case}.log",
                               sbatch=[f"--nodes={nodes}", f"--job-name={case}"])
            for case, (args, nodes, _) in cases.items()}
    for case, job in jobs.items():
        info = slurm.wait(job, JOB_TIMEOUT_S)
        log = job.text()
        assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), log
        assert cases[case][2] in log, log
        assert "preflight failed (the error is above); nothing was started" in log
        assert "srun" not in log
    assert not (tmp_path / "run").exists()


def test_export_job_writes_a_hugging_face_folder_from_the_two_node_checkpoint(
        slurm, pretrain_jobs, tmp_path):
    """slurm/export.sbatch on the tensor-parallel-2 checkpoint of the 2-node job: one full,
    unsharded Hugging Face folder."""
    from safetensors import safe_open

    job, output_dir = pretrain_jobs["uninterrupted"]
    slurm.wait(job, JOB_TIMEOUT_S)
    export = slurm.submit("slurm/export.sbatch", [str(output_dir / "checkpoints"),
                                                  str(tmp_path / "hf")], tmp_path / "export.log")
    info = slurm.wait(export, JOB_TIMEOUT_S)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), export.text()
    assert (tmp_path / "hf" / "config.json").is_file()
    shapes = {}
    for path in (tmp_path / "hf").glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
    assert shapes["model.embed_tokens.weight"] == (512, 32)  # both TP shards of the vocabulary
    assert shapes["lm_head.weight"] == (512, 32)
