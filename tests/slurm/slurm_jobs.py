"""Submitting the project's real batch scripts to the tests' private Slurm cluster and
following their jobs (scontrol polling: `sbatch --wait` polls every 32 s and returns 0 for a
job cancelled while pending)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("cluster.sh")
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(count: int) -> int:
    """A base port such that base .. base+count-1 are all free now (Slurm's daemons)."""
    for _ in range(50):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of ports for the Slurm daemons")


def cannot_run_reason() -> str | None:
    """Why the harness cannot run on this machine, or None."""
    if sys.platform != "linux":
        return "the Slurm harness needs Linux"
    if os.geteuid() != 0:
        return "the Slurm harness needs root (it runs slurmd and unshare)"
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    if not shutil.which("unshare"):
        return "the Slurm harness needs unshare (util-linux)"
    return None


@dataclass
class Job:
    id: str
    log: Path

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def task(self, index: int, log: Path) -> "Job":
        """One task of an array job (scontrol names it <array id>_<index>)."""
        return Job(f"{self.id}_{index}", log)


class Cluster:
    def __init__(self, directory: Path, env: dict):
        self.directory = directory
        self.env = env

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check,
                              timeout=60, **kw)

    def submit(self, script: str, args: list[str], log: Path, sbatch: list[str] = (),
               env: dict | None = None) -> Job:
        """sbatch the repository's script from the repository root, as the README says."""
        out = subprocess.run(
            ["sbatch", "--parsable", f"--output={log}", *sbatch, str(ROOT / script), *args],
            cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=60)
        assert out.returncode == 0, out.stderr
        return Job(out.stdout.strip().split(";")[0], log)

    def info(self, job: Job) -> dict:
        """scontrol's fields of the job (JobState, ExitCode, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job.id).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def wait(self, job: Job, timeout: float, until=None) -> dict:
        """Poll until the job has ended (or until(info) holds); fail with its log on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info(job)
            if until(info) if until else info["JobState"] not in ACTIVE_STATES:
                return info
            time.sleep(0.5)
        self.run("scancel", job.id, check=False)
        raise AssertionError(f"job {job.id} still {info['JobState']} after {timeout} s; "
                             f"log:\n{job.text()[-4000:]}")
