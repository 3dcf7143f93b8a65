"""Tiny configurations for tests."""

from __future__ import annotations

from pathlib import Path

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


def tiny_data_files(root: Path) -> dict:
    """The first ~300 KB of the embedded corpus, a 512-piece tokenizer, one .bin/.idx:
    {"tokenizer": path, "prefix": path prefix}."""
    from megatron_ponder.data.corpus import write_default_corpus
    from megatron_ponder.data.indexed import preprocess
    from megatron_ponder.data.tokenizer import Tokenizer, train_tokenizer

    corpus = write_default_corpus(root / "corpus.jsonl", max_bytes=300_000, quiet=True)
    model = train_tokenizer([corpus], root / "tokenizer", vocab_size=512)
    prefix = root / "corpus_text_document"
    preprocess([corpus], Tokenizer.load(model), prefix, progress=False)
    return {"tokenizer": str(model), "prefix": str(prefix)}
