"""Per-rank exit codes, written where a batch script can read them after torchrun.

torchrun turns a child's exit code 3 ("stopped after saving, run again") into its own 1,
the same code as a crash, so each rank writes its code into PONDER_EXIT_CODE_DIR (shared by
every node, like the checkpoints) before it exits.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from megatron_ponder.run_layout import write_atomically

ENV_DIR = "PONDER_EXIT_CODE_DIR"


def record_exit_code(code: int) -> None:
    """Write rank-<RANK>.json atomically when PONDER_EXIT_CODE_DIR is set; else nothing."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return
    rank = int(os.environ.get("RANK", "0"))
    path = Path(directory) / f"rank-{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "exit_code": code, "host": socket.gethostname()}
    write_atomically(path, json.dumps(record) + "\n")


def read_exit_codes(directory: str | Path) -> dict[int, dict]:
    """rank -> {"rank", "exit_code", "host"} for every rank that recorded one."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    records = (json.loads(p.read_text()) for p in sorted(directory.glob("rank-*.json")))
    return {r["rank"]: r for r in records}
