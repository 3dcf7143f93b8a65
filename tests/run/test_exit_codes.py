"""The exit codes are defined once (run/exit_codes.py) with the numbers the batch scripts and
README name; each rank's code reaches the batch script through PONDER_EXIT_CODE_DIR, also when
the trainer fails before training (bad input) or is not asked for it at all."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from megatron_ponder.run import exit_codes
from megatron_ponder.run.exit_codes import (
    ENV_DIR, EXIT_BAD_INPUT, EXIT_DONE, EXIT_FAILED, EXIT_REQUEUE, EXIT_SIGTERM, read_exit_codes,
    record_exit_code,
)

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = Path(exit_codes.__file__).resolve()


def test_the_codes_are_the_numbers_the_batch_scripts_name():
    # slurm/*.sbatch exit with and compare these literally (bash), as README "exit codes" does.
    assert (EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REQUEUE, EXIT_SIGTERM) == (0, 1, 2, 3, 143)


def _code_definitions_and_literal_exits(path: Path) -> list[str]:
    """`EXIT_* = ...` assignments, and `return 2` / `return 3` / `sys.exit(2)` with a literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno} defines {t.id}" for t in targets
                  if isinstance(t, ast.Name) and t.id.startswith("EXIT_")]
        value = node.value if isinstance(node, ast.Return) else (
            node.args[0] if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "exit"
            and node.args else None)
        if isinstance(value, ast.Constant) and value.value in (EXIT_BAD_INPUT, EXIT_REQUEUE):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} exits with {value.value}")
    return found


def test_the_codes_are_defined_once():
    """The trainer, train.py, the launcher, the sweep runner and the tools name the codes
    from run/exit_codes.py; none defines or spells its own (they were in four places)."""
    files = [*(ROOT / "megatron_ponder").rglob("*.py"), *(ROOT / "tools").glob("*.py")]
    found = [line for path in files if path.resolve() != DEFINITIONS
             for line in _code_definitions_and_literal_exits(path)]
    assert found == []


def test_record_and_read(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "codes"))
    for rank, code in ((1, 3), (0, 3)):
        monkeypatch.setenv("RANK", str(rank))
        record_exit_code(code)
    records = read_exit_codes(tmp_path / "codes")
    assert {rank: r["exit_code"] for rank, r in records.items()} == {0: 3, 1: 3}
    assert not list((tmp_path / "codes").glob("*.tmp"))


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    record_exit_code(3)
    assert list(tmp_path.iterdir()) == []
    assert read_exit_codes(tmp_path / "absent") == {}


def test_the_training_entry_point_records_its_exit_code(tmp_path):
    env = {ENV_DIR: str(tmp_path / "codes"), "RANK": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "megatron_ponder.train", str(tmp_path / "none.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "none.yaml does not exist" in done.stderr
    record = json.loads((tmp_path / "codes" / "rank-0.json").read_text())
    assert record["exit_code"] == EXIT_BAD_INPUT and record["rank"] == 0
