"""Broken file systems for the fault tests: read-only directories and full disks.

Root (as here and in CI) passes every permission check, so chmod cannot make a directory
read-only for it: an immutable flag (chattr +i) or a read-only mount does. Each helper
skips the test, saying why, where none of its ways works.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest


def tree_digest(path: Path) -> dict:
    """relative path -> sha256 of every file under `path`: equal before and after = untouched."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def _writable(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory` (existing, empty) made read-only for this process for the block."""
    directory = Path(directory)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    if _run("chattr", "+i", str(directory)):
        try:
            if _writable(directory):
                pytest.skip(f"chattr +i did not make {directory} read-only for root")
            yield directory
        finally:
            _run("chattr", "-i", str(directory))
        return
    with tmpfs(directory, "64k", "ro"):
        yield directory


@contextlib.contextmanager
def tmpfs(directory: Path, size: str, *options: str):
    """A tmpfs of `size` (mount's syntax: "256k") mounted on `directory` for the block."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not _run("mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", *options)), "tmpfs",
                str(directory)):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): no read-only "
                    "or size-limited file system to test with")
    try:
        yield directory
    finally:
        _run("umount", "-l", str(directory))


def resize(directory: Path, size: str) -> None:
    """Grow (or shrink) the tmpfs mounted on `directory`: space freed on a full disk."""
    assert _run("mount", "-o", f"remount,size={size}", str(directory))
