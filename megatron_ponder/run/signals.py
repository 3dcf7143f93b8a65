"""Stop requests: SIGTERM / SIGUSR1 (Slurm's warning signal) and a wall-time limit.

A signal only sets a flag; the trainer finishes the current step, saves a checkpoint and
exits with EXIT_REQUEUE (exit_codes.py), so a batch script can requeue the job and the next
run resumes. Light (no torch): train.py installs it before its heavy imports.
"""

from __future__ import annotations

import signal
import time


class StopRequest:
    def __init__(self, max_wall_time_s: float = 0.0,
                 signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)):
        self.start = time.monotonic()
        self.max_wall_time_s = max_wall_time_s
        self.reason: str | None = None
        self.decided_at_s: float | None = None  # seconds after start when reason was set
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def adopt(self, received: list[int], previous: dict) -> None:
        """Take over from handlers installed before this object (the entry module's first
        lines): the signals they recorded count as received here, and restore() puts back
        the handlers they replaced."""
        if received and self.reason is None:
            self._handle(received[0], None)
        self._previous.update(previous)

    def _handle(self, signum, frame) -> None:
        self.reason = f"received {signal.Signals(signum).name}"

    def check(self, margin_s: float) -> str | None:
        """The reason to stop now, if any: a signal, or less wall time left than margin_s
        (the caller's estimate of one more step plus a checkpoint save)."""
        if self.reason is None and self.max_wall_time_s > 0:
            elapsed = time.monotonic() - self.start
            if elapsed + margin_s >= self.max_wall_time_s:
                self.reason = f"wall-time limit train.max_wall_time_s={self.max_wall_time_s:g} s"
                self.decided_at_s = elapsed
        return self.reason

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
