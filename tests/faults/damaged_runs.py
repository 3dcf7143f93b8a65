"""Copies of a finished run, damaged on purpose, for the checkpoint-reading fault tests."""

from __future__ import annotations

import shutil
from pathlib import Path

SHARD = "__0_0.distcp"


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:size])
