#!/usr/bin/env python3
"""How long after it is started `python -m megatron_ponder.train` still dies of a SIGTERM
(exit 143 instead of 3): the time from the spawn to the moment the entry module's first
lines have installed its handler (the SIGTERM bit of SigCgt in /proc/PID/status), which is
the interpreter's own start (site, runpy, the package's __init__). Linux only.

    python bench/startup_signal_window.py --runs 20 [--load-procs 2] [--repo CHECKOUT]

--load-procs N runs N busy processes meanwhile (a loaded node, as when several ranks start
at once). The last stdout line is JSON: the window's median, p90 and max in ms, and the time
to the first handler of the same kind in a bare `python -c pass`-sized script for scale.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A bare interpreter that installs a SIGTERM handler in its first line: the floor.
BARE = "import signal; signal.signal(signal.SIGTERM, lambda *a: None); print('x')"


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def full_pipe() -> tuple[int, int]:
    """(read end, write end) of a pipe whose buffer is full: a child writing to it blocks,
    so a `--help` run stays alive after its handler is installed, however slowly this
    process polls on a loaded machine."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)  # the child shares the file description: it must block
    return read_end, write_end


def window_ms(command: list[str], repo: Path = REPO) -> float:
    """ms from the spawn until the child catches SIGTERM (it is then stopped)."""
    read_end, write_end = full_pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=repo, stdout=write_end, stderr=subprocess.DEVNULL)
    try:
        while not catches_sigterm(proc.pid):
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited before installing a SIGTERM handler")
        return (time.perf_counter() - start) * 1e3
    finally:
        proc.kill()
        proc.wait()
        os.close(read_end)
        os.close(write_end)


def busy(stop) -> None:
    while not stop.is_set():
        pass


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "max_ms": round(ordered[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load-procs", type=int, default=0)
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the checkout whose megatron_ponder runs (its root is the cwd)")
    args = parser.parse_args()
    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=busy, args=(stop,), daemon=True)
            for _ in range(args.load_procs)]
    for proc in load:
        proc.start()
    try:
        # --help: the handler is installed before argparse is even imported
        trainer, bare = [], []
        for _ in range(args.runs):  # interleaved: a shared machine's slow phases hit both
            trainer.append(window_ms([sys.executable, "-m", "megatron_ponder.train", "--help"],
                                     args.repo))
            bare.append(window_ms([sys.executable, "-c", BARE]))
    finally:
        stop.set()
        for proc in load:
            proc.join()
    result = {"runs": args.runs, "load_procs": args.load_procs, "cpus": os.cpu_count(),
              "trainer_window": summary(trainer), "bare_interpreter": summary(bare)}
    print(f"spawn -> SIGTERM handler: trainer median {result['trainer_window']['median_ms']} ms "
          f"(max {result['trainer_window']['max_ms']}); bare interpreter median "
          f"{result['bare_interpreter']['median_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
