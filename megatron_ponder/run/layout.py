"""What a training run's directory holds, and where a tool may write without harming one.

    <train.output_dir>/            a run: config.yaml, metrics.jsonl, .trainer.lock, checkpoints/
      checkpoints/                 latest_checkpointed_iteration.txt, step_NNNNNNN/
        step_NNNNNNN/              one checkpoint: metadata.json, manifest.json, common.pt, *.distcp

No tool writes into, or replaces, a directory that holds a run or a checkpoint, nor writes
anywhere inside a checkpoint; `--force` replaces only a previous Hugging Face export
(recognised by what tools/export_hf.py writes). Files next to a run's own (an eval_ppl
JSON in the run directory) are fine, unless they would replace one of the run's files.
Every output location is also checked writable before anything is written, by creating and
removing a directory rather than with os.access: root passes every permission check, yet
cannot write to a read-only mount or an immutable (chattr +i) directory.
Light on purpose (no torch): plot_pareto and the sweep CLI import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".trainer.lock"
CHECKPOINTS_DIR = "checkpoints"
TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^step_(\d{7})$")
MANIFEST = "manifest.json"
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, LOCK_FILE, CHECKPOINTS_DIR)
CHECKPOINT_ENTRIES = (TRACKER, MANIFEST, "metadata.json", "common.pt")
# What tools/export_hf.py writes that nothing else does (megatron_ponder/export/hf_export.py).
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
EXPORT_CONFIG_KEY = "megatron_ponder_config"


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Write a file whole or not at all: a temporary file next to it (named per process and
    call, so concurrent writers do not share one), then a rename over `path`; a failed write
    leaves `path` as it was and no temporary behind. str is written as UTF-8."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.{time.monotonic_ns()}")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # never hide the error that got us here
            tmp.unlink(missing_ok=True)


def _refuse(message: str):
    # The light tools (plot_pareto, the sweep CLI's --help) would otherwise load torch just
    # to check a path. defer: torch (config imports it), only when refusing
    from megatron_ponder.config import ConfigError

    raise ConfigError(message)


def run_contents(directory: Path) -> str | None:
    """The first entry of `directory` that marks a run or a checkpoint, else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for name in (*RUN_ENTRIES, *CHECKPOINT_ENTRIES):
        if (directory / name).exists():
            return name
    return next((p.name for p in directory.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), None)


def _checkpoint_around(path: Path) -> Path | None:
    """`path` itself or its nearest ancestor that is a checkpoint or a checkpoints/ directory."""
    for directory in (path, *path.parents):
        if directory.is_dir() and (STEP_DIR.match(directory.name)
                                   or any((directory / n).exists() for n in CHECKPOINT_ENTRIES)):
            return directory
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(path: str | Path, what: str) -> Path:
    """`path` is a directory this process can create entries in, or can be created as one
    (`what` names the argument or field). Leaves nothing behind."""
    path = Path(os.path.abspath(path))
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        _refuse(f"{what} {path} {where}, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ponder-write-probe-", dir=existing))
    except OSError as err:
        _refuse(f"{what} {path} is not writable: cannot create entries in {existing} "
                f"({err.strerror}); choose a writable location")
    return path


def check_output_prefix(prefix: str | Path, what: str = "output prefix") -> None:
    """An output prefix (PREFIX.bin, PREFIX.model, ...) must name files in a writable
    directory; "DIR/" would write hidden files such as DIR/.bin."""
    text = str(prefix)
    if text.endswith(("/", os.sep)) or not Path(text).name or Path(text).is_dir():
        _refuse(f"{what} {text} names a directory: give DIR/NAME, which writes DIR/NAME.* "
                "files")
    check_writable_dir(Path(text).parent, f"the directory of {what} {text},")


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


def _refuse_inside_a_checkpoint(path: Path, what: str, kind: str) -> None:
    """No tool output lands in a checkpoint directory (its manifest would no longer hold)."""
    inside = _checkpoint_around(path.parent)
    if inside is not None:
        _refuse(f"{what} {path} is inside the checkpoint directory {inside}: "
                f"choose a {kind} outside it; nothing was written")


def check_output_dir(path: str | Path, what: str) -> Path:
    """A directory a tool will create or add files to (`what` names the argument)."""
    path = check_writable_dir(path, what)
    holds = run_contents(path)
    if holds is not None:
        _refuse(f"{what} {path} holds a training run or checkpoint ({holds}): "
                "choose another directory; nothing was written")
    _refuse_inside_a_checkpoint(path, what, "directory")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """A file a tool will write (or replace): never a run's own file, nothing in a checkpoint."""
    path = Path(path).absolute()
    if path.is_dir():
        _refuse(f"{what} {path} is a directory; give a file name")
    if not path.parent.is_dir():  # refused now, not by a FileNotFoundError after the work
        _refuse(f"{what} {path}: its folder {path.parent} does not exist; create it first "
                "or choose a file in an existing folder; nothing was written")
    _refuse_inside_a_checkpoint(path, what, "file")
    if path.name in RUN_ENTRIES and run_contents(path.parent) is not None:
        _refuse(f"{what} {path} would replace the run's own {path.name}: choose "
                "another file name; nothing was written")
    return path


def is_export(directory: Path) -> bool:
    """True for a folder tools/export_hf.py wrote: its config and weights, files only (so
    nothing else, no run, can be inside)."""
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
        config = json.loads((directory / EXPORT_CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and EXPORT_CONFIG_KEY in config
            and (directory / EXPORT_WEIGHTS).is_file() and all(p.is_file() for p in entries))


def check_export_output(path: str | Path, force: bool) -> Path:
    """The folder tools/export_hf.py writes: new, or with `force` a previous export only."""
    path = check_output_dir(path, "output")
    for staging in (path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")):
        if run_contents(staging) is not None:  # export_hf clears its staging folders
            _refuse(f"{staging} holds a training run or checkpoint and export_hf "
                              f"stages {path} there: choose another output folder")
    if path.exists():
        if not force:
            _refuse(f"{path} already exists; pass --force to replace a previous export")
        if not is_export(path):
            _refuse(f"{path} exists and is not a previous export (no {EXPORT_CONFIG} "
                              f"with {EXPORT_CONFIG_KEY} and {EXPORT_WEIGHTS}, or it holds "
                              "folders): --force replaces only an export; choose another folder")
    return path
