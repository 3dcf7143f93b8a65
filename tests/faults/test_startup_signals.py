"""A SIGTERM during start-up exits 3 ("run the same command again") with nothing saved,
however early it comes: `python -m megatron_ponder.train` installs its stop handling in its
first lines, before any other import (argparse, then torch and megatron: seconds), and a stop
before the first step saves nothing. What remains is the interpreter's own start
(bench/startup_signal_window.py measures it)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_ponder.run.exit_codes import EXIT_REQUEUE
from megatron_ponder.run.signals import StopRequest
from megatron_ponder.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="watches the trainer's start-up through /proc (Linux)")


def catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (SigCgt: the mask of caught signals)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def has_mapped(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


MOMENTS = {
    # the first moment a handler exists: a few imports into the interpreter's start
    "handler installed": catches_sigterm,
    # torch's shared library is loading: torch and megatron imports have seconds to go
    "importing torch": lambda pid: has_mapped(pid, "libtorch_cpu"),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_sigterm_while_importing_exits_3_and_writes_nothing(tiny_recipe, tmp_path, moment):
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "megatron_ponder.train", str(recipe)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not MOMENTS[moment](proc.pid):
            assert time.monotonic() < deadline, f"never saw the moment {moment!r}"
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_REQUEUE, output[-3000:]
    assert ("received SIGTERM during start-up: nothing to save; exit code 3: run the same "
            "command again") in output
    assert not (tmp_path / "run").exists() and not (tmp_path / "index_cache").exists()


PAUSE_AT_IMPORT = """
import importlib, os, sys, time
# A stand-in for the module of this name: it says it is being imported, waits for the
# test's go, then puts the real module in its place.
open(os.environ["PAUSED_FILE"], "w").close()
deadline = time.monotonic() + 300
while not os.path.exists(os.environ["RESUME_FILE"]) and time.monotonic() < deadline:
    time.sleep(0.005)
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules[__name__]
sys.modules[__name__] = importlib.import_module(__name__)
"""


# argparse: the entry module's first import after its handlers (before the fix, the handlers
# came after it: exit -15); the heavy imports are the "importing torch" moment above.
@pytest.mark.parametrize("module,sig", [("argparse", signal.SIGTERM), ("argparse", signal.SIGUSR1)])
def test_a_stop_while_the_entry_module_imports_exits_3(tiny_recipe, tmp_path, module, sig):
    """The child pauses inside `import MODULE` (a stand-in of that name first on its path)
    until the signal has been sent: the moment is exact however loaded the machine is."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / f"{module}.py").write_text(PAUSE_AT_IMPORT)
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    env = {**os.environ, "PAUSED_FILE": str(paused), "RESUME_FILE": str(resume),
           "PYTHONPATH": os.pathsep.join(
               [str(shims), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", "megatron_ponder.train", str(recipe)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not paused.exists():
            assert time.monotonic() < deadline, f"the child never imported {module}"
            time.sleep(0.005)
        proc.send_signal(sig)
        time.sleep(0.2)  # delivered and handled (or fatal) while still paused
        resume.touch()
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_REQUEUE, (proc.returncode, output[-3000:])
    assert (f"received {signal.Signals(sig).name} during start-up: nothing to save; exit code 3"
            in output)
    assert not (tmp_path / "run").exists() and not (tmp_path / "index_cache").exists()


def test_sigterm_during_set_up_saves_nothing_and_exits_3(tiny_run, tmp_path):
    # The handler exists (as the CLI installs it first); the signal comes before the trainer
    # has built anything, and set-up runs to its end.
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    os.kill(os.getpid(), signal.SIGTERM)
    trainer = Trainer(tiny_run(tmp_path / "run", steps=6, save_interval=1), stop)
    assert trainer.train() == EXIT_REQUEUE
    assert trainer.stop.reason == "received SIGTERM" and trainer.state.step == 0
    assert not (tmp_path / "run" / "checkpoints").exists()  # step 0 is the seed's init
    assert signal.getsignal(signal.SIGTERM) == before  # restored after the run
