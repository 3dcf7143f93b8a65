"""bench/device_check.py's plumbing on CPU (it never ran on a GPU here): every step's script
exists and the plan fits its budget, refusals exit 2, a skipped GPU test fails the check unless
it is expected on this machine, a step past its limit is killed with its children, and dry runs
write the log and JSON with the step's result: a benchmark, and a two-process (gloo) DP 2
megatron-engine run stopped, resumed and compared with one process (bench/gpu_runs.py).
The whole --dry-run (every step, tiny shapes) takes many minutes on 2 cores: run it by hand."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import device_check  # noqa: E402
import gpu_runs  # noqa: E402


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("gpus", [1, 8])
def test_every_step_names_an_existing_script_and_the_plan_fits_its_budget(dry_run, gpus, tmp_path):
    steps = device_check.plan(dry_run, gpus, tmp_path)
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    for step in steps:
        script = step.command[1]
        assert (ROOT / script).exists() or step.command[1:3] == ["-m", "pytest"], step.name
        assert all((ROOT / arg).exists() for arg in step.command if arg.startswith(("tests/", "recipes/")))
        assert 0 < step.budget_s <= (device_check.DRY_RUN_LIMIT_S if dry_run else 120)
        if step.kind == "runs":
            assert step.command[2] in gpu_runs.SCENARIOS
    if gpus == 1:  # correctness first: every CUDA test file, then every first-user run
        assert names[:4] == list(device_check.CUDA_TEST_FILES)
        assert {f"run_{s}" for s in gpu_runs.ONE_GPU} <= set(names)
    else:
        assert {f"run_{s}" for s in gpu_runs.MULTI_GPU} <= set(names)
    if not dry_run:  # one call of at most 8 minutes: the required steps fit the budget
        assert sum(s.budget_s for s in steps if s.required) <= device_check.BUDGET_S <= 8 * 60 - 20


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_runs_recipe_is_a_valid_config(dry_run, tmp_path):
    """A typo in a scenario's overrides would only show on the GPU machine: load them all here."""
    from megatron_ponder.config import load_config

    for name, scenario in gpu_runs.SCENARIOS.items():
        base = gpu_runs.shape_overrides(scenario, dry_run, tmp_path / "data", tmp_path / "work")
        for run in scenario.runs:
            cfg = load_config(gpu_runs.RECIPE, [*base, *run.overrides])
            assert cfg.train.precision == "fp32", (name, run.name)
    # The multi-GPU shape: one pipeline message (micro-batch x sequence x hidden, even in bf16) > 8 MB.
    cfg = load_config(gpu_runs.RECIPE, gpu_runs.shape_overrides(
        gpu_runs.SCENARIOS["pp2"], False, tmp_path, tmp_path))
    assert cfg.train.micro_batch_size * cfg.data.seq_length * cfg.model.hidden_size * 2 > 8 << 20
    assert cfg.ponder.k == 3 and cfg.train.global_batch_size // cfg.train.micro_batch_size >= 4


def test_print_plan_shows_each_steps_budget(capsys, tmp_path):
    assert device_check.main(["--out", str(tmp_path), "--print-plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "plan: run_exit_resume                35 s" in lines
    assert lines[-1] == "plan: required steps 415 s of the 460 s budget"
    assert not (tmp_path / "device_check.json").exists()


def test_refusals_exit_2(tmp_path):
    assert device_check.main(["--out", str(tmp_path), "--dry-run", "--only", "nope"]) == 2
    assert device_check.main(["--out", str(tmp_path), "--gpus", "9"]) == 2
    assert gpu_runs.main(["nope", "--out", str(tmp_path)]) == 2
    if not torch.cuda.is_available():
        assert device_check.main(["--out", str(tmp_path)]) == 2
        assert device_check.main(["--out", str(tmp_path), "--gpus", "2"]) == 2


def test_a_skipped_gpu_test_fails_the_check_unless_expected_here(tmp_path, monkeypatch):
    tests = tmp_path / "gpu_tests.py"
    tests.write_text("import pytest\n\ndef test_runs():\n    pass\n\n"
                     "@pytest.mark.skip(reason='no GPU')\ndef test_needs_a_gpu():\n    pass\n")
    step = device_check.Step("tests_x", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                         f"--junitxml={tmp_path / 'junit' / 'tests_x.xml'}",
                                         "--rootdir", str(tmp_path), str(tests)], 120, "tests")
    machine = {"gpu_count": 1, "transformer_engine": None, "dry_run": False}
    with open(tmp_path / "log", "w") as log:
        result = device_check.run_step(step, 300, machine, tmp_path, log)
    assert result["exit"] == 0 and not result["ok"]  # pytest passed, the check does not
    assert result["unexpected_skips"] == {"gpu_tests.py::test_needs_a_gpu": "no GPU"}

    monkeypatch.setattr(device_check, "EXPECTED_SKIPS", [
        ("gpu_tests.py::test_needs_a_gpu", lambda m: m["gpu_count"] < 2, "needs 2 GPUs")])
    with open(tmp_path / "log", "w") as log:
        result = device_check.run_step(step, 300, machine, tmp_path, log)
    assert result["ok"] and result["expected_skips"] == {"gpu_tests.py::test_needs_a_gpu": "needs 2 GPUs"}
    machine["gpu_count"] = 2  # the same skip on a 2-GPU machine is not expected
    with open(tmp_path / "log", "w") as log:
        assert not device_check.run_step(step, 300, machine, tmp_path, log)["ok"]


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setattr(device_check, "KILL_GRACE_S", 2)
    pid_file = tmp_path / "child.pid"
    # The step starts a child that ignores SIGTERM (as a rank stuck in a collective may) and waits.
    script = (f"import signal, subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              f"print('started', flush=True)\ntime.sleep(600)\n")
    tic = time.monotonic()
    rc, output = device_check.run_command([sys.executable, "-c", script], limit_s=5)
    assert rc == "timeout" and "started" in output
    assert time.monotonic() - tic < 60
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    survived = _alive(child)
    if survived:  # never leave it behind, whatever the check says
        os.kill(child, 9)
    assert not survived, "the step's child outlived the step"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")  # a zombie is dead


def test_dry_run_benchmark_step_writes_log_and_json(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--out",
                           str(tmp_path), "--dry-run", "--only", "attention"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    step = report["steps"]["attention"]
    assert report["ok"] and report["dry_run"] and step["exit"] == 0
    assert set(step["result"]["results"]) == {"plain", "augmented"}  # the bench's own JSON
    assert "===== attention: exit 0" in (tmp_path / "device_check.log").read_text()
    machine = report["machine"]
    assert machine["torch"] == torch.__version__ and machine["megatron_core"]
    assert {"cuda", "nccl", "transformer_engine", "gpu_name", "gpu_count"} <= set(machine)


def test_multi_gpu_dry_run_resumes_dp2_and_matches_one_process(tmp_path, tiny_data):
    """--gpus 2 --dry-run: gloo and tiny shapes, the same plumbing as on GPUs: DP 2 on the
    megatron engine stops at train.exit_interval (exit 3), resumes, and every step's loss equals
    the one-process run's within gpu_runs.CPU_RTOL."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--out",
                           str(tmp_path), "--dry-run", "--gpus", "2", "--only", "run_dp2_megatron",
                           # the tests' small corpus and 512-piece tokenizer, built once a session
                           "--data-dir", str(Path(tiny_data["tokenizer"]).parent)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    report = json.loads((tmp_path / "device_check.json").read_text())
    step = report["steps"]["run_dp2_megatron"]
    assert proc.returncode == 0 and step["ok"], (step, proc.stdout[-3000:])
    result = step["result"]
    assert result["runs"]["dp2"]["exit"] == [3, 0] and result["runs"]["single"]["exit"] == [0]
    compared = result["compared"]["dp2"]
    assert compared["reference"] == "single" and compared["max_rel_loss_diff"] <= gpu_runs.CPU_RTOL
