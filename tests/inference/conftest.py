"""Inference tests run many tiny matmuls: one thread each (tests/threads.py)."""

from threads import _one_thread  # noqa: F401 (autouse fixture)
