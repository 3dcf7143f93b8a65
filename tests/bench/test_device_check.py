"""bench/device_check.py's plumbing on CPU (it never ran on a GPU here): every step's script
exists, refusals exit 2, and a --dry-run step writes its log and JSON with the step's result.
The whole --dry-run (every step, tiny shapes) takes minutes on 2 cores: run it by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import device_check  # noqa: E402


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_step_names_an_existing_script_and_a_time_limit(dry_run):
    steps = device_check.plan(dry_run)
    assert [name for name, _, _ in steps][:4] == [
        "cuda_tests", "steps_125m_vanilla", "steps_125m_ponderlm2", "steps_125m_ponderlm3"]
    for name, command, limit in steps:
        assert (ROOT / command[1]).exists() or command[1:3] == ["-m", "pytest"], name
        assert all((ROOT / path).exists() for path in command if path.startswith(("tests/", "recipes/")))
        assert 0 < limit <= (device_check.DRY_RUN_LIMIT_S if dry_run else 120)
    # One call of at most 8 minutes on the GPU machine: the budget cuts the last steps' limits.
    assert device_check.BUDGET_S <= 8 * 60 - 20


def test_refusals_exit_2(tmp_path):
    assert device_check.main(["--out", str(tmp_path), "--dry-run", "--only", "nope"]) == 2
    if not torch.cuda.is_available():
        assert device_check.main(["--out", str(tmp_path)]) == 2


def test_dry_run_step_writes_log_and_json(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--out",
                           str(tmp_path), "--dry-run", "--only", "attention"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    step = report["steps"]["attention"]
    assert report["ok"] and report["dry_run"] and step["exit"] == 0
    assert set(step["result"]["results"]) == {"plain", "augmented"}  # the bench's own JSON
    assert "===== attention: exit 0" in (tmp_path / "device_check.log").read_text()
