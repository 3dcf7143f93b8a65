"""Stops and crashes lose nothing: kill -9 during a save, SIGTERM, the wall-time limit,
and non-finite steps."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_runs import read_metrics
from megatron_ponder.model.ponder_lm import PonderLM
from megatron_ponder.run.checkpoint_write import SAVE_DELAY_ENV, Checkpointer
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.training.trainer import NonFiniteError, Trainer

ROOT = Path(__file__).resolve().parents[2]


def launch(recipe: Path, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "megatron_ponder.train", str(recipe)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_for(predicate, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the trainer")
        time.sleep(0.05)


def test_kill_9_during_a_save_keeps_the_previous_checkpoint(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", out, steps=6, save_interval=2)
    ckpts = Checkpointer(out / "checkpoints", keep=5)
    # Every save sleeps 2 s with its files written under step_XXXXXXX.tmp, not yet renamed.
    proc = launch(recipe, {SAVE_DELAY_ENV: "2"})
    wait_for(lambda: (out / "checkpoints" / "step_0000004.tmp" / "metadata.json").exists(), 900, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert ckpts.latest_step() == 2 and ckpts.complete_steps() == [2]
    assert (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"

    resumed = launch(recipe)
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == EXIT_DONE, output
    assert "at step 2" in output  # resumed from the surviving checkpoint
    assert ckpts.complete_steps() == [2, 4, 6]
    assert not list((out / "checkpoints").glob("*.tmp"))  # the half-written save is gone


def test_sigterm_finishes_the_step_saves_and_exits_3(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", out, steps=200, save_interval=1000)
    proc = launch(recipe)
    wait_for(lambda: (out / "metrics.jsonl").exists()
             and len(read_metrics(out)) >= 2, 900, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == EXIT_REQUEUE, output
    assert "received SIGTERM" in output
    done = max(read_metrics(out))  # the last completed step was saved
    assert Checkpointer(out / "checkpoints", 5).latest_step() == done
    assert 2 <= done < 200


def test_wall_time_limit_saves_before_it_is_reached(tiny_run, tmp_path):
    cfg = tiny_run(tmp_path / "run", steps=10_000, save_interval=10_000, max_wall_time_s=1e6)
    trainer = Trainer(cfg)
    # The limit counts from the trainer's start (set-up included, as a job's time limit
    # does); give it 6 s beyond however long set-up took on this machine.
    limit = time.monotonic() - trainer.stop.start + 6.0
    trainer.stop.max_wall_time_s = limit
    assert trainer.train() == EXIT_REQUEUE
    assert trainer.stop.reason.startswith("wall-time limit")
    # It stopped with time left for one more step and a save (its own estimate of both),
    # not when the limit had passed; how long the save then took depends on the machine.
    assert trainer.stop.decided_at_s < limit
    step = trainer.state.step
    assert 0 < step < 10_000
    assert Checkpointer(tmp_path / "run" / "checkpoints", 5).latest_step() == step


def _poison_loss(steps_with_nan):
    original = PonderLM.loss

    def loss(self, output, labels, loss_mask=None):
        value, parts = original(self, output, labels, loss_mask)
        if loss.calls in steps_with_nan:
            value = value * float("nan")
            parts = {**parts, "lm_loss": parts["lm_loss"] * float("nan")}
        loss.calls += 1
        return value, parts

    loss.calls = 0
    return loss


def test_a_non_finite_step_is_skipped(tiny_run, tmp_path, monkeypatch):
    # 2 micro-batches per step: calls 2 and 3 are step 1's.
    monkeypatch.setattr(PonderLM, "loss", _poison_loss({2}))
    trainer = Trainer(tiny_run(tmp_path / "run", steps=4))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v is not None}
    assert trainer.train() == EXIT_DONE
    metrics = read_metrics(tmp_path / "run")
    assert math.isnan(metrics[2]["loss"]) and metrics[4]["skipped_steps"] == 1
    assert all(math.isfinite(metrics[s]["loss"]) for s in (1, 3, 4))
    after = trainer.model.state_dict()
    assert all(bool(after[k].isfinite().all()) for k in before)


def test_too_many_non_finite_steps_stop_with_the_step_and_statistic(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(PonderLM, "loss", _poison_loss(set(range(4, 100))))
    trainer = Trainer(tiny_run(tmp_path / "run", steps=20, max_nonfinite_skips=2, save_interval=1))
    with pytest.raises(NonFiniteError, match=r"step 5 \(counted from 1, as in the progress line\): "
                                             r"loss is not finite .* 3 consecutive steps, more than "
                                             r"train.max_nonfinite_skips=2; the newest good "
                                             r"checkpoint, .*step_0000002, is the resume point"):
        trainer.train()
    # Steps 3 and 4 ran inside the streak: not saved (tests/faults/test_correctness.py).
    assert Checkpointer(tmp_path / "run" / "checkpoints", 5).latest_step() == 2
