"""A trainer checkpoint for a model that was not trained here (the Hugging Face import, a
continued pretraining): its weights, a fresh optimizer state and a schedule at `step`.

Written by run/checkpoint_write.py like every checkpoint; it lives in training, not run/,
because it builds what only training knows: an engine, an optimizer and its schedule."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from megatron_ponder.config import Config, config_to_dict
from megatron_ponder.run.checkpoint_write import Checkpointer
from megatron_ponder.training.engines import build_engine
from megatron_ponder.training.optim import build_scheduler
from megatron_ponder.training.trainer import TrainState


def save_training_checkpoint(model, cfg: Config, checkpoints_dir: str | Path, step: int) -> Path:
    """Save `model` as a trainer checkpoint a run can resume from: its weights, a fresh
    AdamW state and schedule, the data position `step`."""
    engine = build_engine(cfg, model)
    scheduler = build_scheduler(engine.optimizer, cfg.train)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(step):  # the schedule position matches the data position
            scheduler.step()
    checkpointer = Checkpointer(Path(checkpoints_dir), keep=cfg.train.keep_checkpoints)
    return checkpointer.save(step, engine, scheduler,
                             dataclasses.asdict(TrainState(step=step)), config_to_dict(cfg))
