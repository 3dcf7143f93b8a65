"""A tiny sentencepiece tokenizer shared by the tool tests; one thread per op (tiny
matmuls spin with two threads on the shared 2-core machine)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from threads import _one_thread  # noqa: F401 (autouse fixture)

# Offline, with a scratch Hugging Face home (remote-code modules are copied there); set at
# collection, before anything imports transformers.
_HF_HOME = tempfile.mkdtemp(prefix="ponder_hf_home_")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=_HF_HOME,
                  TRANSFORMERS_VERBOSITY="error")


@pytest.fixture(scope="session")
def tool_data(tmp_path_factory) -> dict:
    """A 512-piece tokenizer and one indexed dataset from ~300 KB of the default corpus."""
    from megatron_ponder.data.corpus import write_default_corpus
    from megatron_ponder.data.indexed import preprocess
    from megatron_ponder.data.tokenizer import Tokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("tool_data")
    corpus = write_default_corpus(root / "corpus.jsonl", max_bytes=300_000, quiet=True)
    model = train_tokenizer([corpus], root / "tokenizer", vocab_size=512)
    prefix = root / "corpus_text_document"
    preprocess([corpus], Tokenizer.load(model), prefix, progress=False)
    return {"tokenizer": str(model), "prefix": str(prefix)}


@pytest.fixture(scope="session")
def tool_tokenizer(tool_data) -> str:
    return tool_data["tokenizer"]
