"""slurm/pretrain.sbatch when Slurm's SIGTERM ends an attempt before it has saved anything:
a rank signalled in the interpreter's own start dies with 143 and records no exit code. The
attempt lost nothing, so the job exits 3 ("stopped, run again": what a wrapper requeues on),
not 1. srun, scontrol and scancel are stand-ins here (tests/slurm runs a real cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# srun as the batch script sees it when scancel/preemption reaches the job during start-up:
# the script gets SIGTERM, the launcher (its ranks not yet catching it) ends with 143.
FAKE_SRUN = """#!/usr/bin/env bash
kill -TERM "$PPID"
sleep 0.5
exit 143
"""
FAKES = {"srun": FAKE_SRUN,
         "scontrol": "#!/usr/bin/env bash\necho localhost\n",
         "scancel": "#!/usr/bin/env bash\nexit 0\n"}


@pytest.mark.skipif(sys.platform != "linux", reason="bash batch script")
@pytest.mark.parametrize("saved_during_attempt", [False, True])
def test_sigterm_before_the_first_checkpoint_exits_3(tiny_recipe, tmp_path, saved_during_attempt):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    run = tmp_path / "run"
    if saved_during_attempt:  # the fake srun "completes" a checkpoint before the SIGTERM
        (bin_dir / "srun").write_text(FAKE_SRUN.replace(
            "kill", f"mkdir -p {run}/checkpoints && echo 4 > "
            f"{run}/checkpoints/latest_checkpointed_iteration.txt\nkill"))
    recipe = tiny_recipe(tmp_path / "recipe.yaml", run)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PONDER_PYTHON": sys.executable, "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_ID": "7",
           "SLURM_JOB_NODELIST": "localhost", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", str(ROOT / "slurm" / "pretrain.sbatch"), str(recipe)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    if saved_during_attempt:  # ranks without a code after a save: unexplained, a failure
        assert result.returncode == 1, log
        assert "outcome: failed" in log
    else:
        assert result.returncode == 3, log
        assert "srun exit code 143" in log and "outcome: requeue" in log
        assert "stopped by SIGTERM: not requeueing here" in log
