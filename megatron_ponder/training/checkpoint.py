"""Atomic, resumable checkpoints with megatron-core dist_checkpointing.

Layout under `<output_dir>/checkpoints/`:
  step_0000100/                      one complete checkpoint (dist_checkpointing format)
  latest_checkpointed_iteration.txt  the step of the newest complete one, written last
A save writes into `step_XXXXXXX.tmp/`, renames it to its final name only when every rank
has finished, and then replaces the tracker file; a crash at any point leaves the previous
checkpoint and tracker untouched. The last `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

from megatron_ponder.training.cpu_shims import cuda_calls_resolve_to_cpu

TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^step_(\d{7})$")
# Fault injection for the crash-during-save test: seconds to sleep with the checkpoint
# half written (files in the temporary directory, not yet renamed).
SAVE_DELAY_ENV = "MEGATRON_PONDER_TEST_SAVE_DELAY_S"


class CheckpointError(RuntimeError):
    pass


def load_sharded(template: dict, path: Path, hint: str) -> dict:
    """dist_checkpointing.load, its failures (a missing shard, another model) as a
    CheckpointError naming the checkpoint and what to do (`hint`)."""
    try:
        return dist_checkpointing.load(template, str(path))
    except BaseException as err:  # CheckpointException derives from BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise CheckpointError(
            f"checkpoint {path} does not fit this model or is incomplete ({type(err).__name__}: "
            f"{str(err)[:500]}); {hint}") from None


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


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


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
        "rng": ShardedObject("rng_state", rng_state(), (world,), (_rank(),), replica_id=0),
    }


class Checkpointer:
    def __init__(self, directory: Path, keep: int):
        self.directory = Path(directory)
        self.keep = keep

    # ------------------------------------------------------------------ discovery

    def complete_steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        steps = []
        for entry in self.directory.iterdir():
            match = STEP_DIR.match(entry.name)
            if match and (entry / "metadata.json").is_file():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The tracker's step if that checkpoint is complete, else the newest complete one."""
        tracker = self.directory / TRACKER
        complete = self.complete_steps()
        if tracker.is_file():
            text = tracker.read_text().strip()
            if text.isdigit() and int(text) in complete:
                return int(text)
        return complete[-1] if complete else None

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:07d}"

    # ------------------------------------------------------------------ save

    def save(self, step: int, engine, scheduler, train_state: dict, config: dict) -> Path:
        final = self.path(step)
        tmp = final.with_name(final.name + ".tmp")
        if _rank() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        _barrier()
        strategy = TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=1)
        with engine.full_parameters(), cuda_calls_resolve_to_cpu():
            state = sharded_state(engine, scheduler, train_state, config)
            dist_checkpointing.save(state, str(tmp), sharded_strategy=strategy)
        delay = float(os.environ.get(SAVE_DELAY_ENV, "0"))
        if delay:
            time.sleep(delay)
        _barrier()
        if _rank() == 0:
            if final.exists():  # an older save of the same step (a rerun): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            tracker_tmp = self.directory / (TRACKER + ".tmp")
            tracker_tmp.write_text(f"{step}\n")
            os.replace(tracker_tmp, self.directory / TRACKER)
            self._prune()
        _barrier()
        return final

    def _prune(self) -> None:
        for step in self.complete_steps()[: -self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for entry in self.directory.glob("step_*.tmp"):  # leftovers of crashed saves
            shutil.rmtree(entry, ignore_errors=True)

    # ------------------------------------------------------------------ load

    def load(self, step: int, engine, scheduler) -> dict:
        """Restore model, optimizer, scheduler and RNG in place; return the common part.

        Model and optimizer tensors reshard to this run's layout (dist_checkpointing); the
        per-rank RNG states only load at the world size that saved them, else we keep the
        fresh seeding of this run (nothing random is drawn from them in training).
        """
        path = self.path(step)
        world = dist.get_world_size() if dist.is_initialized() else 1
        same_world = dist_checkpointing.load_common_state_dict(str(path))["world_size"] == world
        with engine.full_parameters(modify=True):
            template = sharded_state(engine, scheduler, {}, {})
            if not same_world:
                del template["rng"]
            state = load_sharded(template, path, "resume from a checkpoint of the same model "
                                 "shape or start a new train.output_dir")
            engine.model.load_state_dict(state["model"], strict=True)
        engine.load_optimizer_state(state["optimizer"], float(state["adam_step"]))
        scheduler.load_state_dict(state["scheduler"])
        # The next step's learning rate is the schedule's, whichever engine saved the groups.
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        if same_world:
            set_rng_state(state["rng"])
        return state
