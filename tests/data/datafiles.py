"""Small inputs shared by the data tests (a helper module, not a test file)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")

from megatron_ponder.data.corpus import write_default_corpus  # noqa: E402
from megatron_ponder.data.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

CORPUS_BYTES = 120_000  # the embedded corpus capped: its first pydoc topics, ~100 KB
VOCAB = 400


def corpus(directory: Path, max_bytes: int = CORPUS_BYTES) -> Path:
    return write_default_corpus(directory / "corpus.jsonl", max_bytes, quiet=True)


def texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def tokenizer(directory: Path, inputs: list[Path], vocab: int = VOCAB) -> Tokenizer:
    return Tokenizer.load(train_tokenizer(inputs, directory / "tok", vocab))
