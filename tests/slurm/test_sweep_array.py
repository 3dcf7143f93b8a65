"""slurm/sweep.sbatch as the sweep tool submits it: a job array of two tiny configurations on
the real two-node Slurm, each task training and evaluating one configuration and leaving its
record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from slurm_jobs import ROOT

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 600


def tiny_sweep(data: dict, output_dir) -> dict:
    """Hidden 32, 2 layers, 16-token sequences, 4 steps: one vanilla and one PonderLM-3 run."""
    return {
        "name": "slurm-tiny",
        "output_dir": str(output_dir),
        "base": {
            "model": {"vocab_size": 512, "max_position_embeddings": 16},
            "data": {"tokenizer": data["tokenizer"], "prefixes": [data["prefix"]],
                     "split": "90,10,0", "seq_length": 16},
            "train": {"steps": 4, "micro_batch_size": 2, "global_batch_size": 4,
                      "log_interval": 1, "eval_interval": 1000, "eval_batches": 0,
                      "save_interval": 2, "keep_checkpoints": 1},
            "logging": {"tensorboard": False, "wandb": "disabled"},
        },
        "sizes": {"h32": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4}},
        "seeds": [3],
        "grid": [{"size": "h32", "method": "vanilla", "k": 0},
                 {"size": "h32", "method": "ponderlm3", "k": 2, "lambda": 0.0}],
        "eval": {"taus": [1e-4, 0.5], "batches": 2, "micro_batch_size": 2},
    }


def test_a_sweep_array_runs_one_configuration_per_task(slurm, slurm_data, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(tiny_sweep(slurm_data, tmp_path / "sweep")))
    # The tool's own submission is what this test submits (plus a log path outside the repo).
    dry = subprocess.run([sys.executable, "tools/sweep.py", "run", str(sweep), "--submit",
                          "--dry-run"], cwd=ROOT, env=slurm.env, capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0, dry.stderr
    command = dry.stdout.strip().splitlines()[-1].split()
    assert command == ["sbatch", "--array=0-1", "slurm/sweep.sbatch", str(sweep)]
    array = slurm.submit(command[2], command[3:], tmp_path / "task-%a.log", sbatch=[command[1]])

    for task in (0, 1):
        job = array.task(task, tmp_path / f"task-{task}.log")
        info = slurm.wait(job, JOB_TIMEOUT_S)
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), job.text()
        assert f"task {task} of array {array.id}" in job.text()
    records = [json.loads(p.read_text())
               for p in sorted((tmp_path / "sweep" / "records").glob("*.json"))]
    assert [r["point"]["method"] for r in records] == ["ponderlm3", "vanilla"]
    for record in records:  # 4 steps x 4 sequences x 16 tokens, each task its own run
        assert record["training"] == {**record["training"], "steps": 4, "tokens": 256}
        assert 0 < record["validation"]["loss"] < 10
    assert [e["tau"] for e in records[0]["inference"]] == [1e-4, 0.5]
