"""Tokenised corpora as megatron-core indexed datasets (PREFIX.bin + PREFIX.idx).

`preprocess` turns corpus files (sources.py: JSONL plain or compressed, Parquet, a
`save_to_disk` folder, text) into the pair that GPTDataset reads: every non-empty document is
encoded, the end-of-document token appended, and written as one sequence, in the dtype
megatron's own preprocessing picks for the vocabulary (uint16 below 65500 tokens, int32
above). `workers` processes encode (encoding.py) with output byte-identical to one;
`partition`/`partitions` write one part of the corpus and its record (partitions.py), which
`merge` joins into the final pair. Every pair is written under temporary names and renamed at
the end, so a crash or an error never leaves a half-written pair under the final names.

`check_indexed_prefix` validates a pair before training from the file sizes and the index
alone (no token scan): a missing file, a corrupt or truncated .idx, or a .bin whose size
differs from what the index says is a DataError naming the file, never a numpy/mmap
traceback from deep inside GPTDataset.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

from megatron_ponder.data import partitions as parts
from megatron_ponder.data.encoding import encode_chunks
from megatron_ponder.data.errors import DataError
from megatron_ponder.data.progress import Progress
from megatron_ponder.data.sources import expand_inputs, unit_chunks, work_units
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.run.layout import check_output_prefix, created_dirs

_MAGIC = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequences, documents
HOW_TO_CREATE = "create it with tools/preprocess_data.py"


def token_dtype(vocab_size: int) -> type:
    """The token dtype megatron's preprocess_data.py uses for this vocabulary size."""
    return DType.optimal_dtype(vocab_size)


@dataclass
class IndexedInfo:
    """What the index of a PREFIX.bin/.idx pair says (after `check_indexed_prefix`)."""

    prefix: str
    num_sequences: int  # GPTDataset's "documents": one sequence per document here
    num_documents: int
    num_tokens: int
    dtype: type
    sequence_lengths: np.ndarray = field(repr=False)


@dataclass
class PreprocessStats:
    prefix: str
    documents: int
    tokens: int
    skipped_empty: int
    seconds: float
    dtype: type
    reused: str = ""  # a complete part found by a rerun: why it was kept

    def summary(self) -> str:
        if self.reused:
            return (f"kept {self.prefix}.bin/.idx ({self.reused}): {self.documents} documents, "
                    f"{self.tokens} tokens")
        rate = self.seconds or 1e-9
        return (f"wrote {self.prefix}.bin/.idx: {self.documents} documents, {self.tokens} "
                f"tokens ({np.dtype(self.dtype).name}), {self.skipped_empty} empty documents "
                f"skipped, {self.seconds:.1f} s ({self.documents / rate:.0f} documents/s, "
                f"{self.tokens / rate:.0f} tokens/s)")


def preprocess(
    inputs: Sequence[str | Path],
    tokenizer: Tokenizer,
    output_prefix: str | Path,
    *,
    json_key: str = "text",
    num_threads: int = 1,
    workers: int = 1,
    partition: int | None = None,
    partitions: int | None = None,
    progress: bool = True,
) -> PreprocessStats:
    """Tokenise `inputs` (files, directories, globs) into OUTPUT_PREFIX.bin/.idx, EOD after
    every document; with `partitions`, only part `partition` (a rerun keeps it if complete)."""
    start = time.perf_counter()
    if workers < 1:
        raise DataError(f"--workers {workers} is invalid: must be >= 1")
    parts.check_partition(partition, partitions)
    files = expand_inputs(inputs)
    units = work_units(files)
    prefix, label, record_inputs = str(output_prefix), "tokenising", None
    dtype = token_dtype(tokenizer.vocab_size)
    if partitions is not None:
        units = parts.units_of_part(units, partition, partitions)
        prefix = parts.part_prefix(prefix, partition, partitions)
        label = f"part {partition} of {partitions}"
        record_inputs = parts.part_inputs(files, json_key, tokenizer, dtype, partitions)
        record, _ = parts.complete_part(prefix, record_inputs)
        if record is not None:
            stats = record["stats"]
            return PreprocessStats(prefix, stats["documents"], stats["tokens"],
                                   stats["skipped_empty"], time.perf_counter() - start, dtype,
                                   reused="complete: inputs, tokenizer and checksums match")
        parts.remove_record(prefix)  # stale or damaged: redo the part
    check_output_prefix(prefix)
    chunks = (chunk for unit in units for chunk in unit_chunks(unit, json_key))
    encoded = encode_chunks(chunks, tokenizer, dtype, workers, num_threads)
    meter = Progress(label, enabled=progress)
    with created_dirs(Path(prefix).parent):
        skipped = _write_pair(encoded, prefix, dtype, meter, files)
    meter.close()
    check_indexed_prefix(prefix)
    stats = PreprocessStats(prefix, meter.documents, meter.tokens, skipped,
                            time.perf_counter() - start, dtype)
    if record_inputs is not None:
        parts.write_record(prefix, record_inputs, {
            "documents": stats.documents, "tokens": stats.tokens, "skipped_empty": skipped})
    return stats


@contextlib.contextmanager
def _pair_under_temporary_names(prefix: str, dtype) -> Iterator[IndexedDatasetBuilder]:
    """A builder writing PREFIX.bin/.idx under temporary names, renamed when the block ends
    without an error and removed when it raises."""
    tag = f".tmp{os.getpid()}"
    tmp_bin, tmp_idx = f"{prefix}.bin{tag}", f"{prefix}.idx{tag}"
    builder = None
    try:
        builder = IndexedDatasetBuilder(tmp_bin, dtype=dtype)
        yield builder
        builder.finalize(tmp_idx)
        # Drop the old index first: a crash between the renames leaves a .bin without an
        # .idx (reported as missing), never a new .bin paired with an old .idx.
        Path(f"{prefix}.idx").unlink(missing_ok=True)
        os.replace(tmp_bin, f"{prefix}.bin")
        os.replace(tmp_idx, f"{prefix}.idx")
    finally:
        if builder is not None:
            builder.data_file.close()
        for path in (tmp_bin, tmp_idx):
            with contextlib.suppress(OSError):  # never hide the error that got us here
                Path(path).unlink(missing_ok=True)


def _write_pair(encoded, prefix: str, dtype, meter: Progress, files: list[Path]) -> int:
    """Write every chunk's tokens; returns the number of empty documents skipped."""
    skipped = 0
    with _pair_under_temporary_names(prefix, dtype) as builder:
        for chunk in encoded:
            # One write per chunk; the index lists grow exactly as `add_document` per
            # document would make them (one sequence per document), without a Python call
            # and a small array per document.
            builder.data_file.write(chunk.tokens.tobytes())
            before = len(builder.sequence_lengths)
            builder.sequence_lengths.extend(chunk.lengths.tolist())
            builder.document_indices.extend(range(before + 1, len(builder.sequence_lengths) + 1))
            skipped += chunk.skipped
            meter.update(len(chunk.lengths), len(chunk.tokens), chunk.text_bytes)
        if meter.documents == 0:
            names = ", ".join(str(p) for p in files)
            empties = f" ({skipped} empty documents skipped)" if skipped else ""
            raise DataError(f"no non-empty document in {names}{empties}: nothing written to "
                            f"{prefix}.bin/.idx")
    return skipped


def merge(output_prefix: str | Path, partitions: int, progress: bool = True) -> PreprocessStats:
    """Join the N verified parts of OUTPUT_PREFIX, in order, into OUTPUT_PREFIX.bin/.idx."""
    start = time.perf_counter()
    prefix = str(output_prefix)
    parts.check_partition(0, partitions)
    found = parts.verified_parts(prefix, partitions)
    check_output_prefix(prefix)
    dtype = DType.dtype_from_code(_dtype_code(found[0][0]))
    with _pair_under_temporary_names(prefix, dtype) as builder:
        for part, _ in found:
            builder.add_index(part)  # megatron-core's merge: index lists + a .bin copy
    check_indexed_prefix(prefix)
    totals = {k: sum(r["stats"][k] for _, r in found)
              for k in ("documents", "tokens", "skipped_empty")}
    return PreprocessStats(prefix, totals["documents"], totals["tokens"],
                           totals["skipped_empty"], time.perf_counter() - start, dtype)


def _dtype_code(prefix: str) -> int:
    with open(f"{prefix}.idx", "rb") as stream:
        return stream.read(_HEADER_BYTES)[17]


def check_indexed_prefix(prefix: str | Path) -> IndexedInfo:
    """Validate PREFIX.bin/.idx from the index and the file sizes; DataError if anything is off."""
    prefix = str(prefix)
    if prefix.endswith((".bin", ".idx")):
        raise DataError(f"dataset prefix {prefix!r} ends in {prefix[-4:]}: give the prefix "
                        f"without the extension ({prefix[:-4]!r})")
    idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for path in (idx, bin_):
        if not path.is_file():
            raise DataError(f"{path} does not exist (dataset prefix {prefix!r}); "
                            f"{HOW_TO_CREATE} --output-prefix {prefix}")
    idx_size = idx.stat().st_size
    if idx_size < _HEADER_BYTES:
        raise DataError(f"{idx} is truncated: {idx_size} bytes, shorter than the "
                        f"{_HEADER_BYTES}-byte header; {HOW_TO_CREATE}")
    with open(idx, "rb") as stream:
        header = stream.read(_HEADER_BYTES)
    magic, (version,), (code,) = header[:9], struct.unpack("<Q", header[9:17]), header[17:18]
    if magic != _MAGIC or version != 1:
        raise DataError(f"{idx} is not a megatron indexed-dataset index (bad header); "
                        f"{HOW_TO_CREATE}")
    if code not in {d.value for d in DType}:
        raise DataError(f"{idx} is corrupt: unknown token dtype code {code}")
    dtype = DType.dtype_from_code(code)
    sequences, documents = struct.unpack("<QQ", header[18:34])
    expected = _HEADER_BYTES + sequences * (4 + 8) + documents * 8
    if idx_size != expected:
        state = "truncated" if idx_size < expected else "corrupt (longer than its header says)"
        raise DataError(f"{idx} is {state}: {idx_size} bytes, but its header describes "
                        f"{sequences} sequences and {documents} document boundaries, which "
                        f"take {expected} bytes; {HOW_TO_CREATE}")
    if sequences == 0 or documents < 2:
        raise DataError(f"{idx} holds no documents; {HOW_TO_CREATE} from a non-empty corpus")
    lengths = np.memmap(idx, dtype=np.int32, mode="r", offset=_HEADER_BYTES, shape=(sequences,))
    pointers = np.memmap(idx, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 4 * sequences,
                         shape=(sequences,))
    bounds = np.memmap(idx, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 12 * sequences,
                       shape=(documents,))
    itemsize = np.dtype(dtype).itemsize
    total = _check_offsets(idx, lengths, pointers, itemsize)
    if bounds[0] != 0 or bounds[-1] != sequences or (np.diff(bounds) < 0).any():
        raise DataError(f"{idx} is corrupt: its document boundaries do not cover the "
                        f"{sequences} sequences")
    num_tokens = total // itemsize
    bin_size = bin_.stat().st_size
    if bin_size != total:
        state = "truncated" if bin_size < total else "longer than its index says"
        raise DataError(f"{bin_} is {state}: {bin_size} bytes, but {idx} describes "
                        f"{num_tokens} tokens of {np.dtype(dtype).name} = {total} "
                        f"bytes (do the two files come from the same run?); {HOW_TO_CREATE}")
    return IndexedInfo(prefix, int(sequences), int(documents) - 1, num_tokens, dtype,
                       np.asarray(lengths))


def _check_offsets(idx: Path, lengths: np.ndarray, pointers: np.ndarray, itemsize: int,
                   chunk: int = 1 << 20) -> int:
    """Byte offsets must be the running sum of the lengths; returns the .bin size implied.
    Chunked, so a 100M-document index needs no gigabytes of temporaries."""
    offset = 0
    for start in range(0, len(lengths), chunk):
        part = lengths[start:start + chunk].astype(np.int64)
        ends = offset + np.cumsum(part) * itemsize
        starts = np.concatenate(([offset], ends[:-1]))
        if (part < 0).any() or (pointers[start:start + chunk] != starts).any():
            raise DataError(f"{idx} is corrupt: its sequence lengths and byte offsets disagree")
        offset = int(ends[-1])
    return offset
