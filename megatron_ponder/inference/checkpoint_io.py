"""Trainer checkpoints (megatron dist_checkpointing) into the inference tools.

A checkpoint stores global tensors with their shard layout, so a model built at any
layout loads it through its own `sharded_state_dict`; the config travels in the
checkpoint's common state. Accepted paths: a step directory, a run's `checkpoints/`
directory or the run's output directory (the newest complete step of those). Every read
verifies the checkpoint's manifest first (model/checkpoint_files.py): a damaged checkpoint is
a CheckpointError naming its files, which the tools report with exit code 2; so is one
without a manifest, unless the caller passes `allow_unverified` (the tools' --allow-unverified,
inference/checkpoint_args.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_ponder.config import Config, config_from_dict
from megatron_ponder.model.checkpoint_files import (
    CheckpointError, latest_step, load_model_tensors, load_sharded, read_common, step_path,
)


def resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if (path / "metadata.json").is_file():
        return path
    for directory in (path, path / "checkpoints"):
        step = latest_step(directory)
        if step is not None:
            return step_path(directory, step)
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a step_XXXXXXX directory holding metadata.json, "
        f"a checkpoints/ directory, or a training run's output directory")


def checkpoint_config(path: str | Path, overrides: list[str] = (),
                      allow_unverified: bool = False) -> Config:
    """The config saved with the checkpoint, at a single-process layout (TP 1), plus overrides."""
    common = read_common(resolve_checkpoint(path), allow_unverified)
    saved = dict(common["config"])
    saved["parallel"] = {}  # layout of this process, not of the run that saved it
    return config_from_dict(saved, list(overrides))


def load_model_state(model, path: str | Path, allow_unverified: bool = False) -> None:
    """Fill `model` (any layout) from the checkpoint's model tensors."""
    path = resolve_checkpoint(path)
    state = load_sharded({"model": model.sharded_state_dict()}, path,
                         "a shard file may be missing or the checkpoint incomplete",
                         allow_unverified)
    load_model_tensors(model, state["model"])


def load_model(path: str | Path, overrides: list[str] = (), device: str | None = None,
               allow_unverified: bool = False):
    """(PonderLM in eval mode on `device`, its Config) from a trainer checkpoint."""
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel

    cfg = checkpoint_config(path, overrides, allow_unverified)
    initialize_parallel(cfg)
    model = build_model(cfg)
    load_model_state(model, path, allow_unverified)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), cfg
