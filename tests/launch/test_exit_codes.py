"""Each rank's exit code reaches the batch script through PONDER_EXIT_CODE_DIR, also when
the trainer fails before training (bad input) or is not asked for it at all."""

import json
import subprocess
import sys
from pathlib import Path

from megatron_ponder.launch.exit_codes import ENV_DIR, read_exit_codes, record_exit_code

ROOT = Path(__file__).resolve().parents[2]


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
    assert done.returncode == 2, done.stderr
    assert "none.yaml does not exist" in done.stderr
    record = json.loads((tmp_path / "codes" / "rank-0.json").read_text())
    assert record["exit_code"] == 2 and record["rank"] == 0
