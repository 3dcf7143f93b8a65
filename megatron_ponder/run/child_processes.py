"""No process started by a checkpoint save outlives the trainer or tool that saved.

megatron's checkpoint writer (FileSystemWriterAsync) starts two kinds of processes, also in
a synchronous save:
- at the first save, a multiprocessing Manager server (spawned: a fresh interpreter that
  re-imports the entry point, ~330 MB) and its resource tracker, for a results queue; they
  do not watch their parent and outlived every SIGKILLed trainer. A synchronous save runs
  the writer's proxy in this process, so `writer_results_in_process()` gives megatron a
  plain in-process queue instead and neither is ever started;
- per save, one forked process per write bucket. When the parent is SIGKILLed mid-save they
  block forever in their queue's notify_all (waiting for the dead parent), holding a copy
  of its memory, and they inherited the trainer's SIGTERM/SIGUSR1 handler (it only sets a
  flag), so `kill` did not end them either.

`die_with_parent()` registers a fork hook, once per process: in every child forked from the
main thread, PR_SET_PDEATHSIG asks the kernel to SIGKILL the child when that thread (the
process's main thread: its life) ends; and every child gets the default SIGTERM/SIGUSR1
action back. A child forked from another thread would be killed when that thread ends, so
it only gets the signal defaults (megatron's synchronous save forks from the main thread).
Linux only (prctl); elsewhere only the signal defaults apply.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import sys
import threading

from megatron.core.dist_checkpointing.strategies import filesystem_async

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # the trainer's StopRequest handles these

_registered = False
_fork = {"parent": 0, "from_main_thread": False}


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _before_fork() -> None:
    _fork["parent"] = os.getpid()
    _fork["from_main_thread"] = threading.current_thread() is threading.main_thread()


def _in_child() -> None:
    for sig in STOP_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except ValueError:  # not the main thread of the main interpreter: leave it
            pass
    if _PRCTL is not None and _fork["from_main_thread"]:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _fork["parent"]:  # the parent died before prctl took effect
            os._exit(1)


def die_with_parent() -> None:
    """From now on every child this process forks dies with it (idempotent)."""
    global _registered
    if not _registered:
        os.register_at_fork(before=_before_fork, after_in_child=_in_child)
        _registered = True


def writer_results_in_process() -> None:
    """megatron's module-level results queue of the synchronous save: an in-process queue
    rather than a Manager server process (the writer's proxy puts and the finalize step
    gets, both in this process). A no-op if megatron already made one or renamed it."""
    if getattr(filesystem_async, "_results_queue", "absent") is None:
        filesystem_async._results_queue = queue.Queue()
