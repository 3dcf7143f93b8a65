"""One trainer per train.output_dir: a lock held for the run's life in `<output_dir>/.trainer.lock`.

Two trainers on one directory would race (one dies mid-save, the other rewrites config.yaml
and appends duplicate records), so the second refuses at once, naming the holder's PID and
host, which the holder writes into the lock file.

The lock is a POSIX record lock (fcntl.lockf): the kernel drops it when the process dies,
however it dies, so a crashed or SIGKILLed run (a Slurm requeue's previous attempt) never
blocks the next one, and a lock file left behind means nothing by itself. Unlike flock,
it is not inherited by forked children: megatron's checkpoint writer processes, which can
outlive a killed trainer, never keep it alive. It works across nodes on NFS (the server
arbitrates) and on Lustre mounted with `flock`; on a file system without POSIX locks the
trainer refuses to start rather than run unguarded. One process holds it for the whole job
(global rank 0; the ranks of a multi-node job share the directory, so one lock per node
would lock each other out); the other ranks learn the outcome from rank 0.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

import torch.distributed as dist

from megatron_ponder.config import ConfigError
from megatron_ponder.run.layout import LOCK_FILE


class RunLock:
    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; ConfigError naming the holder if another has it."""
        handle = self._lock()
        handle.seek(0)
        handle.truncate()
        job = os.environ.get("SLURM_JOB_ID")
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()}"
                     + (f" (Slurm job {job})" if job else "")
                     + f", since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        handle.flush()
        self._file = handle
        return self

    def check_free(self) -> None:
        """Raise the ConfigError acquire would, without keeping the lock or creating its file
        (a batch job's preflight: refuse before any process starts, write nothing)."""
        if self.path.exists():  # no file: no trainer ever ran here, none holds it
            self._lock().close()

    def _lock(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as err:
            raise ConfigError(f"train.output_dir={str(self.path.parent)!r} cannot hold the run's "
                              f"lock file: {err}") from None
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise ConfigError(f"cannot lock {self.path} ({err}): this file system has no "
                                  "POSIX locks (on Lustre mount with -o flock); choose a "
                                  "train.output_dir on one that has them") from None
            raise ConfigError(
                f"train.output_dir={str(self.path.parent)!r} is in use by another trainer "
                f"({self.holder() or 'it has not written its name yet'}). Two trainers on one "
                "directory would overwrite each other's checkpoints and records: wait for it, "
                "stop it, or choose another train.output_dir") from None
        return handle

    def holder(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Closing the file drops the lock; the file stays (its content is only a hint)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def lock_run(output_dir: Path) -> RunLock | None:
    """Global rank 0 takes the lock; every rank raises the same ConfigError if it could
    not (each exits 2, none waits in a collective for a rank that quit)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    lock, error = None, None
    if rank == 0:
        try:
            lock = RunLock(output_dir).acquire()
        except ConfigError as err:
            error = str(err)
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise ConfigError(error if rank == 0 else f"{error} (checked by rank 0)")
    return lock
