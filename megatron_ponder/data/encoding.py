"""Chunks of documents to token arrays, in this process or in worker processes, in order.

`encode_chunks` yields one `Encoded` per chunk, in the order of the chunks, whatever the
number of workers: each chunk is parsed and encoded independently of the others, so the
output of N workers is byte-identical to one. At most `2 * workers` chunks are in flight
(a few MiB each): memory does not grow with the input. Workers are forked (they inherit the
loaded tokenizer, nothing is re-imported) and encode with one thread each.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np

from megatron_ponder.data.documents import chunk_documents


@dataclass
class Encoded:
    """One chunk's documents as tokens (each ending in the end-of-document id)."""

    tokens: np.ndarray  # all documents, concatenated, in the dataset's token dtype
    lengths: np.ndarray  # int32, one per non-empty document
    skipped: int  # empty or whitespace-only documents
    text_bytes: int  # size of the chunk's raw text (progress)


_worker = {}  # the tokenizer and settings of this (worker) process


def _set_up(tokenizer, dtype, threads: int, worker: bool = False) -> None:
    _worker.update(tokenizer=tokenizer, dtype=dtype, threads=threads)
    if worker:  # one thread per worker process: Hugging Face tokenizers' pool stays off
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _raw_size(chunk) -> int:
    data = getattr(chunk, "data", None)
    if data is not None:
        return len(data)
    array = getattr(chunk, "array", None)
    return array.nbytes if array is not None else 0


def encode_chunk(chunk) -> Encoded:
    tokenizer, dtype = _worker["tokenizer"], _worker["dtype"]
    documents = chunk_documents(chunk)
    texts = [text for text in documents if text.strip()]
    encoded = tokenizer.encode_batch(texts, num_threads=_worker["threads"])
    eod = tokenizer.eod_id
    for ids in encoded:  # fresh lists: appending in place avoids a copy
        ids.append(eod)
    # Two C-level passes over the lists; a Python loop per document was ~1.4x slower.
    lengths = np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded))
    tokens = np.fromiter(chain.from_iterable(encoded), dtype=dtype, count=int(lengths.sum()))
    size = _raw_size(chunk) or sum(len(t) for t in documents)
    return Encoded(tokens, lengths, len(documents) - len(texts), size)


def encode_chunks(chunks: Iterable, tokenizer, dtype, workers: int = 1,
                  threads: int = 1) -> Iterator[Encoded]:
    """`Encoded` of every chunk, in order; a worker's DataError is re-raised here."""
    if workers <= 1:
        _set_up(tokenizer, dtype, threads)
        for chunk in chunks:
            yield encode_chunk(chunk)
        return
    context = multiprocessing.get_context("fork")
    # Forked workers share the parent's pages until written, and the collector writes into
    # every object it scans: frozen objects (torch's and megatron's modules, most of the
    # parent's memory) stay shared. Measured: peak PSS 609 -> 570 MB on a 75 MB .jsonl.zst.
    gc.freeze()
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_up,
                                 initargs=(tokenizer, dtype, 1, True)) as pool:
            pending: deque = deque()
            try:
                for chunk in chunks:
                    pending.append(pool.submit(encode_chunk, chunk))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        gc.unfreeze()
