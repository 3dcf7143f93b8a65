"""Tiny run configurations and metric readers shared by the training and fault tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from distributed import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_dict(tiny_data: dict, output_dir: Path, method: str = "ponderlm3", **train) -> dict:
    return {
        "model": {"vocab_size": 512, "hidden_size": 32, "num_layers": 2,
                  "num_attention_heads": 4, "max_position_embeddings": 32},
        "ponder": {"method": method, "k": 2},
        "data": {"tokenizer": tiny_data["tokenizer"], "prefixes": [tiny_data["prefix"]],
                 "split": "90,10,0", "seq_length": 16,
                 "cache_dir": str(output_dir.parent / "index_cache")},
        "train": {"output_dir": str(output_dir), "steps": 6, "micro_batch_size": 2,
                  "global_batch_size": 4, "lr": 3e-3, "log_interval": 1, "eval_interval": 100,
                  "eval_batches": 2, "save_interval": 3, "keep_checkpoints": 5,
                  "warmup_fraction": 0.2, **train},
        "logging": {"tensorboard": False, "wandb": "disabled"},
        "seed": 5,
    }


def read_metrics(output_dir, kind: str = "train") -> dict[int, dict]:
    from megatron_ponder.training.metrics import read_records

    return {r["step"]: r for r in read_records(Path(output_dir) / "metrics.jsonl")
            if r["kind"] == kind}


def torchrun(recipe: Path, *overrides: str, nproc: int = 2, timeout: float = 900,
             env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """The training CLI under torchrun on this machine (gloo, one thread per rank);
    env_extra: more environment (e.g. distributed.STRICT_COMMS)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
         "--master-port", str(free_port()), "-m", "megatron_ponder.train", str(recipe),
         *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def launch_trainer(recipe: Path, env_extra: dict | None = None) -> subprocess.Popen:
    """The training CLI in the background, its output discarded (fault tests watch files)."""
    return subprocess.Popen([sys.executable, "-m", "megatron_ponder.train", str(recipe)],
                            cwd=ROOT, env={**os.environ, **(env_extra or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 900) -> None:
    """Poll `predicate` until it holds; fail if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"the trainer exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "timed out waiting for the trainer"
        time.sleep(0.05)


def launch_ranks(recipe: Path, *overrides: str, world_size: int = 2) -> list[subprocess.Popen]:
    """Start the training CLI once per rank, the way srun starts tasks without torchrun:
    RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in each process's environment."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "megatron_ponder.train", str(recipe), *overrides],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def train_runs(rank: int, configs: list[dict]) -> list[int]:
    """In one rank of a distributed job: train each config dict in turn; the exit codes."""
    from megatron_ponder.config import config_from_dict
    from megatron_ponder.training.trainer import Trainer

    return [Trainer(config_from_dict(c)).train() for c in configs]


def resume_from(source: Path, target: Path, step: int) -> None:
    """target := a copy of run `source` whose newest complete checkpoint is `step`."""
    import shutil

    shutil.copytree(source, target)
    for later in (target / "checkpoints").glob("step_*"):
        if int(later.name.split("_")[1].split(".")[0]) > step:
            shutil.rmtree(later)
