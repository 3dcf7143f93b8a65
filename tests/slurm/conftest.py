"""A private two-node Slurm cluster for the session (tests/slurm/cluster.sh): installed from
Debian's packages when absent, started once, stopped by PID at the end even when tests fail;
skipped with the reason where it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from factories import tiny_data_files
from slurm_jobs import HARNESS, Cluster, cannot_run_reason, free_port_range


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = cannot_run_reason()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CI_DIR": str(directory), "SLURM_CI_NODES": "2",
           "SLURM_CI_PORT": str(free_port_range(6)), "SLURM_CONF": str(directory / "slurm.conf"),
           # The jobs run this interpreter and this checkout's package.
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(HARNESS.parents[2])}
    install = subprocess.run(["bash", str(HARNESS), "install"], env=env, capture_output=True,
                             text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"could not install Slurm from Debian's packages: {install.stderr[-500:]}")
    try:
        start = subprocess.run(["bash", str(HARNESS), "start"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert start.returncode == 0, f"the Slurm cluster did not start:\n{start.stderr}"
        yield Cluster(directory, env)
    finally:
        subprocess.run(["bash", str(HARNESS), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def slurm_data(tmp_path_factory) -> dict:
    return tiny_data_files(tmp_path_factory.mktemp("slurm_data"))
