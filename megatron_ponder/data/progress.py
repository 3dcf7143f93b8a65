"""Progress of a long preprocessing run: documents, tokens, bytes of text and the rate.

A terminal gets one line rewritten twice a second; a log file (a Slurm job) gets a new line
every `log_interval` seconds, so the log shows the rate over time without megabytes of `\\r`.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, enabled: bool = True, log_interval: float = 30.0):
        self.label, self.enabled = label, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.interval = 0.5 if self.tty else log_interval
        self.start = self.last = time.perf_counter()
        self.documents = self.tokens = self.bytes = 0

    def update(self, documents: int, tokens: int, text_bytes: int) -> None:
        self.documents += documents
        self.tokens += tokens
        self.bytes += text_bytes
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._print(end="\r" if self.tty else "\n")

    def line(self) -> str:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        return (f"{self.label}: {self.documents:,} documents, {self.tokens:,} tokens, "
                f"{self.bytes / 1e6:,.1f} MB of text in {seconds:,.0f} s "
                f"({self.tokens / seconds:,.0f} tokens/s, {self.bytes / 1e6 / seconds:,.1f} MB/s)")

    def _print(self, end: str) -> None:
        print(self.line(), end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._print(end="\n")
