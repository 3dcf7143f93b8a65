"""Tiny configurations for tests."""

from __future__ import annotations

from megatron_ponder.config import Config, config_from_dict


def tiny_config(method: str = "ponderlm3", k: int = 2, overrides: list[str] = (), **model) -> Config:
    """A 2-layer, H 32 decoder: small enough that every pass schedule runs in milliseconds."""
    base = {
        "model": {"vocab_size": 64, "hidden_size": 32, "num_layers": 2,
                  "num_attention_heads": 4, "num_query_groups": 2,
                  "max_position_embeddings": 32, **model},
        "ponder": {"method": method, "k": k},
        "data": {"seq_length": 16},
        "seed": 7,
    }
    return config_from_dict(base, list(overrides))
