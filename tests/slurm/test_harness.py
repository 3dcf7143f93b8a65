"""The tests' Slurm harness: it skips with a reason where it cannot run, and its stop leaves
no daemon it started behind, also with a job still running."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import slurm_jobs
from slurm_jobs import HARNESS, cannot_run_reason, free_port_range


def test_no_root_is_a_skip_reason(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in cannot_run_reason()


def test_no_slurm_and_no_apt_is_a_skip_reason(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert "no apt-get" in cannot_run_reason()
    assert slurm_jobs.shutil is shutil  # the module reads the patched function


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


@pytest.mark.slurm
def test_stop_ends_every_daemon_it_started_with_a_job_running(slurm, tmp_path):
    """A second, private cluster: start, a 2-node job that would sleep 5 minutes, stop."""
    env = {**slurm.env, "SLURM_CI_DIR": str(tmp_path), "SLURM_CI_PORT": str(free_port_range(6)),
           "SLURM_CONF": str(tmp_path / "slurm.conf")}
    subprocess.run(["bash", str(HARNESS), "start"], env=env, check=True, capture_output=True,
                   timeout=60)
    pids = {f.name: int(f.read_text()) for f in (tmp_path / "run").glob("*.pid")
            if "conf" not in f.name}
    try:
        assert sorted(pids) == ["munged.pid", "slurmctld.pid", "slurmd-n1.pid", "slurmd-n2.pid"]
        job = subprocess.run(["sbatch", "--parsable", "-N2", f"--output={tmp_path}/job.log",
                              "--wrap", "srun sleep 317"], env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout.strip()
        for _ in range(600):
            if subprocess.run(["pgrep", "-fc", "^/[^ ]*sleep 317"], capture_output=True,
                              text=True).stdout.strip() == "2":
                break  # one sleep on each node
            time.sleep(0.1)
        else:
            raise AssertionError(f"job {job} did not start its 2 tasks")
    finally:
        subprocess.run(["bash", str(HARNESS), "stop"], env=env, check=True, capture_output=True,
                       timeout=120)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert list((tmp_path / "run").glob("*.pid")) == []
    sleepers = subprocess.run(["pgrep", "-f", "^/[^ ]*sleep 317"], capture_output=True,
                              text=True).stdout
    assert sleepers == "", "the job's processes outlived the cluster"
