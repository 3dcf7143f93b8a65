"""A tiny sentencepiece tokenizer shared by the tool tests; one thread per op (tiny
matmuls spin with two threads on the shared 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tool_tokenizer(tmp_path_factory) -> str:
    from megatron_ponder.data.corpus import write_default_corpus
    from megatron_ponder.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tool_tokenizer")
    corpus = write_default_corpus(root / "corpus.jsonl", max_bytes=300_000, quiet=True)
    return str(train_tokenizer([corpus], root / "tokenizer", vocab_size=512))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
