"""The CPU seconds and peak resident memory a sweep run's training took, accumulated over
the pieces it was trained in (resumes): the runner measures them, the evaluation copies
them into the record."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from megatron_ponder.run.layout import write_atomically

USAGE_FILE = "train_usage.json"


def call_measured(command: list[str], env: dict, usage_path: Path) -> int:
    """subprocess.call that also adds the child's CPU seconds and peak resident memory
    (os.wait4: the trainer and the children it waited for) to usage_path, so a run trained
    in several pieces (resumed) reports its total CPU time and its largest RSS."""
    with subprocess.Popen(command, env=env) as proc:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    previous = read_usage(usage_path) or {"cpu_s": 0.0, "peak_rss_mib": 0.0, "pieces": 0}
    total = {"cpu_s": previous["cpu_s"] + usage.ru_utime + usage.ru_stime,
             "peak_rss_mib": max(previous["peak_rss_mib"], usage.ru_maxrss / 1024),  # KiB
             "pieces": previous["pieces"] + 1}
    write_atomically(usage_path, json.dumps(total) + "\n")
    return proc.returncode


def read_usage(path: Path) -> dict | None:
    """The training usage a sweep run accumulated (None if it was trained elsewhere)."""
    return json.loads(path.read_text()) if path.is_file() else None
