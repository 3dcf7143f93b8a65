"""The largest token id of an indexed dataset, checked against the vocabulary at start-up.

Data tokenised with another tokenizer can hold ids the model's embedding has no row for; the
first batch would then fail deep inside the embedding. The .bin is memory-mapped and
scanned in chunks (a sequential read at disk speed), and the result is cached in the index
cache directory, keyed by the .bin's path, size and modification time, so later runs skip
the scan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from megatron_ponder.data.errors import DataError
from megatron_ponder.run.layout import write_atomically

CHUNK_TOKENS = 1 << 24  # 32 MiB of uint16 per step: bounded memory for any corpus size


def _cache_file(cache_dir: Path, bin_path: str) -> Path:
    return cache_dir / f"token-range-{hashlib.sha1(bin_path.encode()).hexdigest()[:16]}.json"


def _key(bin_path: str) -> dict:
    stat = os.stat(bin_path)
    return {"bin": bin_path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def scan_largest_id(bin_path: str, dtype: type) -> int:
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    largest = 0
    for start in range(0, len(tokens), CHUNK_TOKENS):
        largest = max(largest, int(tokens[start:start + CHUNK_TOKENS].max()))
    return largest


def _cached_largest_id(cache: Path, key: dict) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads(cache.read_text())
        if all(record.get(k) == v for k, v in key.items()):
            return int(record["largest_id"])
    return None


def _remember(cache: Path, record: dict) -> None:
    """Written atomically; skipped where the cache directory is read-only."""
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, json.dumps(record) + "\n")


def check_token_ids(prefix: str, dtype: type, vocab_size: int, model_vocab_size: int | None,
                    cache_dir: str | Path) -> int:
    """The largest id in PREFIX.bin; DataError naming the prefix and that id if it is >=
    vocab_size (the tokenizer's). Cached only once it passed: a failed check writes nothing."""
    bin_path = os.path.abspath(prefix + ".bin")
    key, cache = _key(bin_path), _cache_file(Path(cache_dir), bin_path)
    largest = _cached_largest_id(cache, key)
    scanned = largest is None
    if scanned:
        largest = scan_largest_id(bin_path, dtype)
    if largest >= vocab_size:
        model = f" (model.vocab_size={model_vocab_size})" if model_vocab_size else ""
        raise DataError(
            f"{prefix}.bin holds token id {largest}, but data.tokenizer has {vocab_size} "
            f"ids{model}: it was tokenised with another tokenizer; re-run "
            "tools/preprocess_data.py with data.tokenizer")
    if scanned:
        _remember(cache, {**key, "largest_id": largest})
    return largest
