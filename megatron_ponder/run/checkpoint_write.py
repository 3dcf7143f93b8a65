"""Atomic, resumable checkpoints with megatron-core dist_checkpointing.

Layout (layout.py; read by checkpoint_read.py, which inference reads through too):
`<output_dir>/checkpoints/` holds `step_XXXXXXX/` directories and a tracker file naming
the newest complete one. A save writes into `step_XXXXXXX.tmp/`, adds `manifest.json`
(checksums of every file, manifest.py), renames it to its final name only when every rank
has finished, and then replaces the tracker file; a crash at any point leaves the previous
checkpoint and tracker untouched. The last `keep` checkpoints are kept. Every read verifies
the manifest first (checkpoint_read.read_common / load_sharded).

The engine (training/engines) is what a save reads the model and optimizer through, and it
also gives the context megatron's own calls run in (`engine.megatron_calls()`: on a machine
without CUDA, training/cpu_shims.py), so this package does not import training.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

from megatron_ponder.run import manifest as checkpoint_manifest
from megatron_ponder.run.checkpoint_read import (
    DEBUG_ENV, CheckpointError, complete_steps, latest_step, load_model_tensors, load_sharded,
    one_line_reason, rank, read_common, resume_candidates, step_path,
)
from megatron_ponder.run.child_processes import die_with_parent, writer_results_in_process
from megatron_ponder.run.layout import TRACKER

# Fault injection for the crash-during-save test: seconds to sleep with the checkpoint
# half written (files in the temporary directory, not yet renamed).
SAVE_DELAY_ENV = "MEGATRON_PONDER_TEST_SAVE_DELAY_S"
# Fault injection for the orphaned-writer test: seconds each process megatron forks to write
# the checkpoint sleeps first, so the trainer can be killed while its writers are alive.
WRITER_DELAY_ENV = "MEGATRON_PONDER_TEST_WRITER_DELAY_S"
# Below this much free space a failed save is reported as a full disk.
DISK_FULL_BYTES = 64 << 20
TRAINING_HINT = "resume from a checkpoint of the same model shape or start a new train.output_dir"


class CheckpointSaveError(CheckpointError):
    """A save that failed for a reason outside the program (a full disk): the run stops
    with this message instead of a traceback; the previous checkpoint is intact."""


# megatron's writer logs a failed write ("Local process 0 encountered an error: [enforce fail
# at inline_container.cc:672] . unexpected pos ...") before raising the same error, which
# save() reports in its own message: held back, so the first line on stderr is ours.
WRITER_LOGGER = "megatron.core.dist_checkpointing.strategies.filesystem_async"


class _DropWriteErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR
                    and "encountered an error" in record.getMessage())


@contextlib.contextmanager
def _write_errors_reported_by_us():
    """For the block, the writer's log of a failed write is dropped (PONDER_DEBUG=1 keeps it)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        yield
        return
    logger, drop = logging.getLogger(WRITER_LOGGER), _DropWriteErrors()
    logger.addFilter(drop)  # forked writer processes inherit it
    try:
        yield
    finally:
        logger.removeFilter(drop)


_writer_delay_registered = False


def _inject_writer_delay() -> None:
    global _writer_delay_registered
    delay = float(os.environ.get(WRITER_DELAY_ENV, "0"))
    if delay and not _writer_delay_registered:
        os.register_at_fork(after_in_child=lambda: time.sleep(delay))
        _writer_delay_registered = True


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sharded_state(engine, scheduler, train_state: dict, config: dict) -> dict:
    """What a checkpoint holds: sharded model and optimizer tensors, the rest in common.pt.
    The optimizer part is per parameter whatever the engine (engines/base.py)."""
    model_state = engine.model.sharded_state_dict()
    optim, adam_step = engine.sharded_optimizer_state(model_state)
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "model": model_state,
        "optimizer": optim,
        # AdamW's per-parameter `step` is the same scalar for every parameter: saved once.
        "adam_step": adam_step,
        "scheduler": scheduler.state_dict(),
        "train_state": dict(train_state),
        "config": config,
        "world_size": world,
        # Per-rank RNG state; a run resumed at another world size reseeds instead.
        "rng": ShardedObject("rng_state", rng_state(), (world,), (rank(),), replica_id=0),
    }


class Checkpointer:
    def __init__(self, directory: Path, keep: int, allow_unverified: bool = False):
        """allow_unverified: read checkpoints without a manifest (the run's opt-in,
        train.allow_unverified_checkpoint)."""
        self.directory = Path(directory)
        self.keep = keep
        self.allow_unverified = allow_unverified

    # ------------------------------------------------------------------ discovery

    def complete_steps(self) -> list[int]:
        return complete_steps(self.directory)

    def latest_step(self) -> int | None:
        return latest_step(self.directory)

    def resume_candidates(self) -> list[int]:
        return resume_candidates(self.directory)

    def newest_usable(self, skipped: list[str] | None = None,
                      below: int | None = None) -> int | None:
        """The step to resume from: the first candidate (older than `below`, if given) that
        verifies and whose common state reads, or None when there is no checkpoint. Why each
        one was passed over is appended to `skipped`. Raise CheckpointError when checkpoints
        exist but none is usable, naming every one and why."""
        skipped = [] if skipped is None else skipped
        for step in self.resume_candidates():
            if below is not None and step >= below:
                continue
            try:
                self.read_common(step)
                return step
            except CheckpointError as err:
                skipped.append(str(err))
        if skipped:
            raise CheckpointError(
                f"no checkpoint in {self.directory} is usable: " + " | ".join(skipped)
                + ". Move the damaged ones away to start again from step 0.")
        return None

    def read_common(self, step: int) -> dict:
        return read_common(self.path(step), self.allow_unverified)

    def path(self, step: int) -> Path:
        return step_path(self.directory, step)

    # ------------------------------------------------------------------ save

    def save(self, step: int, engine, scheduler, train_state: dict, config: dict) -> Path:
        final = self.path(step)
        tmp = final.with_name(final.name + ".tmp")
        writer_results_in_process()  # no process outlives a killed saver (child_processes.py)
        die_with_parent()
        _inject_writer_delay()
        try:
            if rank() == 0:
                self.directory.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
            _barrier()
            strategy = TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=1)
            with engine.full_parameters(), engine.megatron_calls(), \
                    _write_errors_reported_by_us():
                state = sharded_state(engine, scheduler, train_state, config)
                dist_checkpointing.save(state, str(tmp), sharded_strategy=strategy)
            delay = float(os.environ.get(SAVE_DELAY_ENV, "0"))
            if delay:
                time.sleep(delay)
            _barrier()
            checkpoint_manifest.write_manifest(tmp)  # inside tmp: the rename publishes both
        except BaseException as err:  # CheckpointException derives from BaseException
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            full = None if interrupted else self._disk_full(err)
            if full is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back
            latest = self.latest_step()
            kept = ("no checkpoint was complete yet" if latest is None else
                    f"the newest complete checkpoint (step {latest}) is intact")
            raise CheckpointSaveError(
                f"saving checkpoint {final.name} failed: the file system of {self.directory} "
                f"is full ({full / 2**20:.1f} MiB free); {kept}. Free space (or lower "
                f"train.keep_checkpoints) and run the same command to resume. "
                f"[{one_line_reason(err)}]") from err
        if rank() == 0:
            if final.exists():  # an older save of the same step (a rerun): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            tracker_tmp = self.directory / (TRACKER + ".tmp")
            tracker_tmp.write_text(f"{step}\n")
            os.replace(tracker_tmp, self.directory / TRACKER)
            self._prune()
        _barrier()
        return final

    def _disk_full(self, err: BaseException) -> int | None:
        """Free bytes when `err` comes from a full file system, else None. torch's writer
        reports ENOSPC as "unexpected pos 704 vs 598", without errno: check the space too."""
        existing = next(p for p in (self.directory, *self.directory.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        chain = err
        while chain is not None:
            if isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT):
                return free
            chain = chain.__cause__ or chain.__context__
        return free if free < DISK_FULL_BYTES else None

    def _prune(self) -> None:
        for step in self.complete_steps()[: -self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for entry in self.directory.glob("step_*.tmp"):  # leftovers of crashed saves
            shutil.rmtree(entry, ignore_errors=True)

    # ------------------------------------------------------------------ load

    def load(self, step: int, engine, scheduler, hint: str = TRAINING_HINT) -> dict:
        """Restore model, optimizer, scheduler and RNG in place; return the common part.

        Model and optimizer tensors reshard to this run's layout (dist_checkpointing); the
        per-rank RNG states only load at the world size that saved them, else we keep the
        fresh seeding of this run (nothing random is drawn from them in training). `hint`
        ends the message of a checkpoint that does not load: what the caller can do.
        """
        path = self.path(step)
        world = dist.get_world_size() if dist.is_initialized() else 1
        same_world = self.read_common(step)["world_size"] == world
        with engine.full_parameters(modify=True):
            template = sharded_state(engine, scheduler, {}, {})
            if not same_world:
                del template["rng"]
            state = load_sharded(template, path, hint, self.allow_unverified)
            load_model_tensors(engine.model, state["model"])
        engine.load_optimizer_state(state["optimizer"], float(state["adam_step"]))
        scheduler.load_state_dict(state["scheduler"])
        # The next step's learning rate is the schedule's, whichever engine saved the groups.
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        if same_world:
            set_rng_state(state["rng"])
        return state
