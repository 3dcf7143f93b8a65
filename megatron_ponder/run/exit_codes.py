"""A run's exit codes, defined here once, and where each rank records its own.

The trainer (`python -m megatron_ponder.train`), the tools, the sweep runner and the batch
launcher (megatron_ponder/launch) exit with these; the batch scripts (slurm/*.sbatch) and
README "exit codes" name the same numbers and this file.

torchrun turns a child's exit code 3 ("stopped after saving, run again") into its own 1,
the same code as a crash, so each rank writes its code into PONDER_EXIT_CODE_DIR (shared by
every node, like the checkpoints) before it exits.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from megatron_ponder.run.layout import write_atomically

EXIT_DONE = 0  # all train.steps ran; a tool did its work
EXIT_FAILED = 1  # anything else: a non-finite loss, a crash, a full disk
EXIT_BAD_INPUT = 2  # a recipe, data, checkpoint or argument was refused: running again cannot help
EXIT_REQUEUE = 3  # stopped early by a signal, the wall-time limit or train.exit_interval;
#                   a checkpoint of the current step was saved: run the same command again
# Not ours: a process SIGTERM ended before its handlers existed (the interpreter's own start)
# dies of the signal, which a shell reports as 128 + 15 (README "exit codes").
EXIT_SIGTERM = 143

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
