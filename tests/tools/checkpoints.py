"""Tiny trainer checkpoints for the tool tests: random weights, a router that prunes."""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_ponder.config import config_from_dict
from megatron_ponder.training.initial_checkpoint import save_training_checkpoint
from megatron_ponder.model import build_model
from megatron_ponder.parallel import initialize_parallel


def tiny_tool_config(tokenizer: str, method: str = "ponderlm3", k: int = 3, overrides=()):
    base = {
        "model": {"vocab_size": 512, "hidden_size": 32, "num_layers": 2,
                  "num_attention_heads": 4, "num_query_groups": 2,
                  "max_position_embeddings": 48},
        "ponder": {"method": method, "k": k, "tau": 0.05},
        "data": {"tokenizer": tokenizer, "seq_length": 32},
        "train": {"steps": 10},
        "logging": {"tensorboard": False, "wandb": "disabled"},
        "seed": 3,
    }
    return config_from_dict(base, list(overrides))


def make_checkpoint(root: Path, tokenizer: str, method: str = "ponderlm3", k: int = 3,
                    step: int = 4, overrides=()):
    """(run directory, model) with a router whose decisions differ per token at tau 0.05."""
    cfg = tiny_tool_config(tokenizer, method, k, overrides)
    initialize_parallel(cfg)
    model = build_model(cfg)
    if model.decoder.router is not None:
        net = model.decoder.router.net
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            net.weight.copy_(torch.randn(net.weight.shape, generator=gen) * 0.3)
            net.bias.copy_(torch.tensor([0.0, 0.0, -1.5, -3.0][: k + 1]))
    run = Path(root) / f"run_{method}"
    save_training_checkpoint(model, cfg, run / "checkpoints", step)
    return run, model.eval()
