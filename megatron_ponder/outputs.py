"""Where the trainer and the tools write: checked before anything is written, and the
directories a failed write created are removed again, so bad input leaves nothing behind.

Writability is probed by creating and removing a directory, not with os.access: root passes
every permission check, yet still cannot write to a read-only mount or an immutable
(chattr +i) directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from megatron_ponder.config import ConfigError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(path: str | Path, what: str) -> None:
    """ConfigError naming `what` (e.g. "train.output_dir") unless `path` is a directory this
    process can create entries in, or could be created as one. Leaves nothing behind."""
    path = Path(os.path.abspath(path))
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ConfigError(f"{what}={str(path)!r} {where}: it must be a directory (or a path "
                          "that can be created as one)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ponder-write-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{what}={str(path)!r} is not writable: cannot create entries in "
                          f"{existing} ({err.strerror}); choose a writable location") from None


def check_output_prefix(prefix: str | Path) -> None:
    """An output prefix (PREFIX.bin, PREFIX.model, ...) must name files in a writable
    directory; "DIR/" would write hidden files such as DIR/.bin."""
    text = str(prefix)
    if text.endswith(("/", os.sep)) or not Path(text).name or Path(text).is_dir():
        raise ConfigError(f"output prefix {text!r} names a directory: give DIR/NAME, which "
                          "writes DIR/NAME.* files")
    check_writable_dir(Path(text).parent, "output prefix directory")


@contextlib.contextmanager
def created_dirs(path: str | Path) -> Iterator[Path]:
    """Create directory `path` and its missing parents; if the block raises, remove the ones
    created here again (those still empty), so a failed write leaves no empty directories."""
    path = Path(os.path.abspath(path))
    existing = _nearest_existing(path)
    new = [path, *path.parents]
    new = new[:new.index(existing)] if existing in new else []
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for directory in new:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
