"""No process outlives a killed trainer: a SIGKILL in the middle of a save leaves no
writer process behind, nor does one between saves; a forked child takes SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil

from tiny_runs import ROOT, launch_trainer, wait_for
from megatron_ponder.run.checkpoint_write import WRITER_DELAY_ENV


def test_sigkill_in_the_middle_of_a_save_leaves_no_process_behind(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", out, steps=6, save_interval=2)
    # megatron forks a writer per save; each now sleeps 60 s before it writes.
    proc = launch_trainer(recipe, {WRITER_DELAY_ENV: "60"})
    trainer = psutil.Process(proc.pid)
    wait_for(lambda: trainer.children(), proc)
    started = trainer.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(started, timeout=10)
    for survivor in alive:  # do not leave them to the next test
        survivor.kill()
    assert not alive, [p.cmdline() for p in alive]
    assert not list((out / "checkpoints").glob("step_0000002")), "killed before the rename"


def test_no_process_lingers_after_saves_of_a_killed_trainer(tiny_recipe, tmp_path):
    """megatron's first save used to spawn a Manager server (~330 MB, a fresh interpreter)
    and a resource tracker that outlived a SIGKILLed trainer even between saves."""
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", out, steps=10_000, save_interval=1)
    proc = launch_trainer(recipe)
    wait_for(lambda: (out / "checkpoints" / "step_0000002").exists(), proc)
    started = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(started, timeout=10)
    for survivor in alive:
        survivor.kill()
    assert not alive, [p.cmdline() for p in alive]


def test_a_forked_child_of_a_saver_takes_sigterm(tmp_path):
    """The trainer's stop handler only sets a flag; a child that inherited it ignored kill."""
    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys, time
        from megatron_ponder.run.child_processes import die_with_parent
        from megatron_ponder.run.signals import StopRequest

        stop = StopRequest()
        die_with_parent()
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGTERM)
        child.join(10)
        print("child exit code", child.exitcode)
        if child.is_alive():
            child.kill()
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert f"child exit code {-signal.SIGTERM}" in result.stdout, result.stdout + result.stderr
