"""Run a sweep: train each configuration (the project's trainer, in a subprocess), then
evaluate it and write its record. Both phases resume: a run with a record is done, a run
whose checkpoint reached train.steps is only evaluated, a half-trained run continues from
its checkpoint (the trainer resumes by itself)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

import yaml

from megatron_ponder.config import config_to_dict
from megatron_ponder.run.checkpoint_read import latest_step
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.run.layout import write_atomically
from megatron_ponder.sweeps.evaluate import evaluate_run
from megatron_ponder.sweeps.records import write_record
from megatron_ponder.sweeps.spec import RunSpec, Sweep
from megatron_ponder.sweeps.usage import USAGE_FILE, call_measured

REPO = Path(__file__).resolve().parents[2]


class RunFailed(RuntimeError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def trained_steps(sweep: Sweep, run: RunSpec) -> int:
    step = latest_step(sweep.run_dir(run) / "checkpoints")
    return step or 0


@contextlib.contextmanager
def run_lock(sweep: Sweep, run: RunSpec):
    """Yield True while this process holds the run's lock, False if another process does:
    two workers on one sweep (or overlapping array tasks) never train the same run."""
    path = sweep.run_dir(run) / ".sweep.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def status(sweep: Sweep, run: RunSpec) -> str:
    """done (record written) / running (another process holds it) / trained (final
    checkpoint, no record) / partial / pending."""
    if not sweep.record_path(run).is_file() and sweep.run_dir(run).is_dir():
        with run_lock(sweep, run) as mine:
            if not mine:
                return "running"
    return _progress(sweep, run)


def _progress(sweep: Sweep, run: RunSpec) -> str:
    if sweep.record_path(run).is_file():
        return "done"
    step = trained_steps(sweep, run)
    if step >= run.config.train.steps:
        return "trained"
    return f"partial ({step}/{run.config.train.steps} steps)" if step else "pending"


def write_recipe(sweep: Sweep, run: RunSpec) -> Path:
    path = sweep.run_dir(run) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, yaml.safe_dump(config_to_dict(run.config), sort_keys=False))
    return path


def train(sweep: Sweep, run: RunSpec, threads: int | None) -> None:
    """Train (or resume) one run with `python -m megatron_ponder.train`; raise RunFailed."""
    recipe = write_recipe(sweep, run)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = call_measured([sys.executable, "-m", "megatron_ponder.train", str(recipe)], env,
                         sweep.run_dir(run) / USAGE_FILE)
    if code == EXIT_REQUEUE:
        raise RunFailed(f"{run.run_id}: training stopped early after saving a checkpoint; run "
                        "the same sweep command again to resume", code)
    if code != EXIT_DONE:
        raise RunFailed(f"{run.run_id}: training failed with exit code {code} (recipe "
                        f"{recipe}; its log is above)", code)


def run_one(sweep: Sweep, run: RunSpec, *, threads: int | None = None,
            train_only: bool = False) -> str:
    """Bring one run as far as asked (unless another process holds it); return what was done."""
    with run_lock(sweep, run) as mine:
        if not mine:
            return "skipped (another process is working on it)"
        return _run_locked(sweep, run, threads, train_only)


def _run_locked(sweep: Sweep, run: RunSpec, threads: int | None, train_only: bool) -> str:
    state = _progress(sweep, run)
    if state == "done":
        return "skipped (record exists)"
    if state != "trained":
        start = time.perf_counter()
        train(sweep, run, threads)
        trained_in = f"trained in {time.perf_counter() - start:.0f}s"
    else:
        trained_in = "already trained"
    if train_only:
        return trained_in
    start = time.perf_counter()
    record = evaluate_run(sweep, run, progress=print)
    write_record(sweep.record_path(run), record)
    return f"{trained_in}, evaluated in {time.perf_counter() - start:.0f}s"


def run_sweep(sweep: Sweep, indices: list[int], *, threads: int | None = None,
              train_only: bool = False) -> None:
    total = len(indices)
    start = time.perf_counter()
    for n, index in enumerate(indices, 1):
        run = sweep.runs[index]
        print(f"[{n}/{total}] run {index} {run.run_id}: {status(sweep, run)}", flush=True)
        outcome = run_one(sweep, run, threads=threads, train_only=train_only)
        elapsed = time.perf_counter() - start
        print(f"[{n}/{total}] run {index} {run.run_id}: {outcome} ({elapsed / 60:.1f} min "
              "since the sweep started)", flush=True)


def submit_command(sweep_path: str | Path, num_runs: int,
                   sbatch_script: str | Path = "slurm/sweep.sbatch") -> list[str]:
    """The Slurm array submission: one array task per configuration."""
    return ["sbatch", f"--array=0-{num_runs - 1}", str(sbatch_script), str(sweep_path)]
