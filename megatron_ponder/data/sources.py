"""Corpus files as published, found and cut into units of work, streamed in bounded memory.

Inputs (`expand_inputs`): each argument, in the order given, is a file, a directory or a
glob pattern (``shards/*.parquet``, ``**`` recurses). A directory expands to every regular
file under it whose name does not start with ``.`` (recursively); a directory and a pattern
expand in byte order of their paths (``sorted``), so the same tree gives the same order on any
machine. A directory holding a Hugging Face ``save_to_disk`` dataset (``state.json`` next to
``dataset_info.json``) is read as its ``data-*.arrow`` files in ``state.json``'s order.

Formats, from the name (a trailing ``.gz``/``.bz2``/``.xz``/``.zst`` is decompressed while
reading: the standard library for the first three, pyarrow for zstd):

* ``.jsonl``/``.json``/``.ndjson``: one JSON object per line, the document in a string field;
* ``.parquet``: one string column, read row group by row group (pyarrow);
* ``.arrow``: an Arrow IPC stream as ``datasets`` writes it, read record batch by batch;
* anything else: UTF-8 text, documents separated by blank lines (documents.py).

A *unit* is the smallest piece a partition gets: a Parquet row group, an Arrow file, or a
whole other file (a compressed stream cannot be split without reading it). A unit is read as
*chunks* of about `CHUNK_BYTES` of text: picklable tasks that a worker process turns into
documents, so the reading process only moves bytes and the workers do the parsing.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from megatron_ponder.data.errors import DataError

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CHUNK_BYTES = 1 << 22  # 4 MiB of text per task: a few ms of IPC against ~1 s of encoding
HF_STATE, HF_INFO = "state.json", "dataset_info.json"


def compression(path: Path) -> str | None:
    return COMPRESSIONS.get(Path(path).suffix.lower())


def kind(path: Path) -> str:
    """'jsonl', 'parquet', 'arrow' or 'text', from the name (compression suffix stripped)."""
    path = Path(path)
    suffix = (path.with_suffix("") if compression(path) else path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in (".parquet", ".arrow") and compression(path):
        raise DataError(f"{path}: a compressed {suffix} file cannot be read as such; "
                        f"decompress it ({suffix} files carry their own compression)")
    return {".parquet": "parquet", ".arrow": "arrow"}.get(suffix, "text")


def _is_hf_dataset(directory: Path) -> bool:
    return (directory / HF_STATE).is_file() and (directory / HF_INFO).is_file()


def _hf_dataset_files(directory: Path) -> list[Path]:
    try:
        state = json.loads((directory / HF_STATE).read_text())
        files = [directory / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{directory / HF_STATE} is not a datasets save_to_disk state file "
                        f"({err}); save the dataset with Dataset.save_to_disk") from None
    for path in files:
        if not path.is_file():
            raise DataError(f"{path} (listed in {directory / HF_STATE}) does not exist")
    return files


def _directory_files(directory: Path) -> list[Path]:
    if _is_hf_dataset(directory):
        return _hf_dataset_files(directory)
    if (directory / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in directory.iterdir() if p.is_dir())
        raise DataError(f"{directory} is a datasets DatasetDict: pass one split's folder "
                        f"({', '.join(str(directory / s) for s in splits)})")
    files = []  # by name at every level: the order of the paths' components
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():  # a save_to_disk folder inside is read as a dataset, not as files
            files += _directory_files(entry)
        elif entry.is_file():
            files.append(entry)
    return files


def expand_inputs(arguments: Iterable[str | Path]) -> list[Path]:
    """Files to read, in order (module docstring); DataError if one is missing or empty."""
    arguments = [str(a) for a in arguments]
    if not arguments:
        raise DataError("no input given: pass files, directories or glob patterns "
                        "(.jsonl[.gz|.zst|...], .parquet, a save_to_disk folder, text)")
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _directory_files(path)
            if not found:
                raise DataError(f"input directory {path} holds no files")
        elif path.exists():
            found = [path]
        elif glob.has_magic(argument):
            found = []
            for match in sorted(glob.glob(argument, recursive=True)):
                match = Path(match)
                found += _directory_files(match) if match.is_dir() else [match]
            if not found:
                raise DataError(f"input pattern {argument!r} matches no file")
        else:
            raise DataError(f"input file {path} does not exist")
        for file in found:
            if not file.is_file():
                raise DataError(f"input {file} is not a regular file (pass files, "
                                f"directories or glob patterns)")
            if file.stat().st_size == 0:
                raise DataError(f"input file {file} is empty (0 bytes)")
            kind(file)  # a compressed .parquet is refused before any work
        files += found
    return files


@dataclass(frozen=True)
class Unit:
    """What one partition can take: a Parquet row group (`row_group` set) or a whole file."""

    path: Path
    weight: int  # bytes on disk: partitions are balanced by it
    row_group: int | None = None
    first_row: int = 0

    def describe(self) -> str:
        return f"{self.path} row group {self.row_group}" if self.row_group is not None \
            else str(self.path)


def work_units(files: list[Path]) -> list[Unit]:
    """The units of `files`, in reading order (a Parquet file's metadata is read here)."""
    units = []
    for path in files:
        if kind(path) == "parquet":
            metadata = _parquet(path).metadata
            row = 0
            for group in range(metadata.num_row_groups):
                meta = metadata.row_group(group)
                units.append(Unit(path, max(1, meta.total_byte_size), group, row))
                row += meta.num_rows
        else:
            units.append(Unit(path, path.stat().st_size))
    return units


def _parquet(path: Path):
    import pyarrow.parquet as pq  # defer: pyarrow, only when reading Parquet

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise DataError(f"{path} is not a readable Parquet file ({err})") from None


# --- chunks: what a worker receives -------------------------------------------------------

@dataclass
class LinesChunk:
    """Raw bytes of whole lines of a JSONL or text file, starting at line `first_line`."""

    path: Path
    first_line: int
    data: bytes
    json_key: str | None  # None: plain text (the chunk holds whole documents)


@dataclass
class ColumnChunk:
    """Rows of a Parquet row group or an Arrow file, read by the worker (Parquet) or given."""

    path: Path
    first_row: int
    column: str
    row_group: int | None = None  # Parquet: the worker reads this row group itself
    array: object = None  # Arrow: a pyarrow array of this many rows


def _open_stream(path: Path):
    codec = compression(path)
    if codec == "zstd":
        import pyarrow as pa  # defer: pyarrow, only for .zst files

        return pa.input_stream(str(path), compression="zstd")
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(codec, open)
    return opener(path, "rb")


def _read_failure(path: Path, line: int, err: Exception) -> DataError:
    return DataError(f"{path}: cannot read past line {line} ({type(err).__name__}: "
                     f"{str(err).strip() or 'unexpected end of data'}); is the file truncated "
                     f"or not {compression(path) or 'plain'}-compressed as its name says?")


def _line_chunks(path: Path, json_key: str | None) -> Iterator[LinesChunk]:
    """Blocks of whole lines; for text, cut only after a blank line (a document boundary)."""
    line = 1
    pending = b""
    try:
        stream = _open_stream(path)
    except OSError as err:
        raise _read_failure(path, 0, err) from None
    with stream:
        while True:
            try:
                block = stream.read(CHUNK_BYTES)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
                raise _read_failure(path, line + pending.count(b"\n"), err) from None
            if not block:
                break
            searched = max(0, len(pending) - 1)  # no cut before: only look at new lines
            pending += block
            cut = _cut(pending, json_key is None, searched)
            if cut > 0:
                data, pending = pending[:cut], pending[cut:]
                yield LinesChunk(path, line, data, json_key)
                line += data.count(b"\n")
    if pending:
        yield LinesChunk(path, line, pending, json_key)


def _cut(data: bytes, text: bool, searched: int = 0) -> int:
    """Length of the longest prefix made of whole lines (text: ending in a blank line);
    0 if there is none. Text is searched back to `searched` only, so a document larger than
    a chunk costs linear, not quadratic, time."""
    if not text:
        return data.rfind(b"\n") + 1
    end = data.rfind(b"\n")
    while end > searched:
        start = data.rfind(b"\n", 0, end)
        if not data[start + 1:end].strip():
            return end + 1
        end = start
    return 0


def _arrow_chunks(path: Path, column: str) -> Iterator[ColumnChunk]:
    import pyarrow as pa  # defer: pyarrow, only for Arrow chunks

    row = 0
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            _check_column(path, reader.schema, column)
            for batch in reader:
                yield ColumnChunk(path, row, column, array=batch.column(column))
                row += batch.num_rows
    except DataError:
        raise
    except Exception as err:  # ArrowInvalid / OSError on a damaged or non-Arrow file
        raise DataError(f"{path}: not a readable Arrow stream after row {row} "
                        f"({str(err).strip()})") from None


def _check_column(path: Path, schema, column: str) -> None:
    import pyarrow as pa  # defer: pyarrow, only for Arrow and Parquet files

    if column not in schema.names:
        raise DataError(f"{path} has no column {column!r} (columns: "
                        f"{', '.join(schema.names)}); name the text column with --text-key")
    field = schema.field(column)
    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        raise DataError(f"{path}: column {column!r} has type {field.type}, not a string; "
                        f"name the text column with --text-key")


def unit_chunks(unit: Unit, text_key: str) -> Iterator[LinesChunk | ColumnChunk]:
    """The chunks of one unit, in order."""
    file_kind = kind(unit.path)
    if file_kind == "parquet":
        _check_column(unit.path, _parquet(unit.path).schema_arrow, text_key)
        yield ColumnChunk(unit.path, unit.first_row, text_key, row_group=unit.row_group)
    elif file_kind == "arrow":
        yield from _arrow_chunks(unit.path, text_key)
    else:
        yield from _line_chunks(unit.path, text_key if file_kind == "jsonl" else None)
