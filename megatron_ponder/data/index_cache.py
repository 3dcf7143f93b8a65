"""megatron's dataset index caches, safe to interrupt and to share between jobs.

GPTDataset and BlendedDataset write each cache set (a description.txt and two or three .npy
files per dataset and split, named HASH-CLASS-SPLIT-*) with plain numpy.save into
data.cache_dir, and later load any set whose files all exist. A build cut short by a full
disk or a kill leaves a truncated last .npy, which every later run would then fail to map
("mmap length is greater than file size"). So the process that builds (rank 0) wraps
megatron's build in `guarded_build`:

* the directory is locked (flock on .build.lock, released by the OS if the process dies),
  so jobs sharing data.cache_dir never check or build it at the same time;
* every .npy must map the way megatron maps it; a set with a file that does not is removed,
  and megatron rebuilds it;
* a build that fails writing (disk full, read-only directory) removes the files it wrote and
  raises a DataError naming data.cache_dir and the OS error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from megatron_ponder.data.errors import DataError

LOCK_NAME = ".build.lock"


def _set_of(name: str) -> str:
    """HASH-CLASS-SPLIT of a cache file named HASH-CLASS-SPLIT-AFFIX (affixes have no '-')."""
    return name.rsplit("-", 1)[0]


def broken_sets(cache_dir: Path) -> list[str]:
    """The cache sets holding a .npy that numpy cannot memory-map as megatron does."""
    broken = set()
    for path in sorted(cache_dir.glob("*.npy")):
        try:
            np.load(path, allow_pickle=True, mmap_mode="r")
        except (ValueError, OSError, EOFError):
            broken.add(_set_of(path.name))
    return sorted(broken)


def remove_sets(cache_dir: Path, sets: list[str]) -> None:
    for path in cache_dir.iterdir():
        if path.is_file() and _set_of(path.name) in sets:
            try:
                path.unlink()
            except OSError as err:
                raise DataError(f"data.cache_dir={str(cache_dir)!r} holds the incomplete index "
                                f"cache file {path.name}, which cannot be removed "
                                f"({err.strerror}); delete it or use another data.cache_dir"
                                ) from None


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """An exclusive flock on cache_dir/.build.lock; none where the directory is read-only
    (a shared, prebuilt cache) or the file system has no locks."""
    try:
        handle = open(cache_dir / LOCK_NAME, "a")
    except OSError:
        yield
        return
    with handle:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _snapshot(cache_dir: Path) -> dict[str, tuple]:
    return {p.name: (s.st_ino, s.st_size, s.st_mtime_ns)
            for p in cache_dir.iterdir() if p.is_file() for s in [p.stat()]}


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind err: megatron re-raises a failed write as a bare Exception."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__
    return err


@contextlib.contextmanager
def guarded_build(cache_dir: str | Path) -> Iterator[None]:
    """Around megatron's build on the building process: see the module docstring."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data.cache_dir={str(cache_dir)!r} cannot be created "
                        f"({err.strerror}); choose a writable directory") from None
    with _locked(cache_dir):
        remove_sets(cache_dir, broken_sets(cache_dir))
        before = _snapshot(cache_dir)
        try:
            yield
        except Exception as err:
            cause = _os_error(err)
            if cause is None:
                raise
            # numpy reports a full disk as a short write ("8350 requested and 4064
            # written", no errno): the free space says what happened.
            free = shutil.disk_usage(cache_dir).free
            for name, state in _snapshot(cache_dir).items():
                if before.get(name) != state:  # written by this build: incomplete
                    with contextlib.suppress(OSError):
                        (cache_dir / name).unlink()
            raise DataError(f"writing the dataset index cache in data.cache_dir="
                            f"{str(cache_dir)!r} failed ({cause.strerror or cause}; "
                            f"{free / 2**20:.1f} MiB free there); the partial files were "
                            "removed: free space or set data.cache_dir to another directory"
                            ) from None
