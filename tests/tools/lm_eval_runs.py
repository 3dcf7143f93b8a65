"""lm-evaluation-harness's `hf` model on a local export and a local task, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_lm_eval(export: Path, task: str, include_path: Path, out: Path,
                add_bos_token: bool) -> tuple[list[dict], dict]:
    """(the logged samples, the task's results) of `lm_eval --model hf` on `export` (with its
    trust_remote_code modeling file, fp32, CPU, batch 1). add_bos_token is always explicit: its
    default differs between transformers versions and changes scores."""
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={export},trust_remote_code=True,add_bos_token={add_bos_token},"
               "dtype=float32", "--tasks", task, "--include_path", str(include_path),
               "--device", "cpu", "--batch_size", "1", "--output_path", str(out),
               "--log_samples"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = [json.loads(line) for path in out.rglob(f"samples_{task}_*.jsonl")
               for line in path.read_text().splitlines()]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    return samples, results
