"""A trainer checkpoint into the inference tools: the model it holds, built at this process's
layout (single process, TP 1) and filled from it.

Reading the checkpoint (which path is meant, its saved config, its tensors, the manifest
verified first) is run/checkpoint_read.py's: a damaged checkpoint is a CheckpointError naming
its files, which the tools report with exit code 2; so is one without a manifest, unless the
caller passes `allow_unverified` (the tools' --allow-unverified, inference/checkpoint_args.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_ponder.model import build_model
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.run.checkpoint_read import checkpoint_config, load_model_state


def load_model(path: str | Path, overrides: list[str] = (), device: str | None = None,
               allow_unverified: bool = False):
    """(PonderLM in eval mode on `device`, its Config) from a trainer checkpoint."""
    cfg = checkpoint_config(path, overrides, allow_unverified)
    initialize_parallel(cfg)
    model = build_model(cfg)
    load_model_state(model, path, allow_unverified)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), cfg
