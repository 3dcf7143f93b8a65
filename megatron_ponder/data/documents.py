"""Documents from the chunks sources.py reads, with errors that name the file and line or row.

* JSONL: one JSON object per line, the document in a string field (``text`` unless told
  otherwise). Blank lines are skipped. A malformed line, a missing field, a null or a
  non-string is an error that names the file and the line number.
* Parquet / Arrow: one string column; a null is an error naming the row (counting from 0).
* text: UTF-8 text in which documents are separated by one or more blank lines (lines holding
  only whitespace). The lines of a document are kept verbatim, joined by ``\\n``; the separating
  blank lines are not part of any document.

`chunk_documents` runs in the worker processes of the preprocessor (it parses; the reading
process only moves bytes). Documents that are empty or only whitespace are returned as they
are; callers skip them (the preprocessor counts them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from megatron_ponder.data.errors import DataError
from megatron_ponder.data.sources import (ColumnChunk, LinesChunk, expand_inputs,
                                          unit_chunks, work_units)


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The files the arguments name (files, directories, globs; see sources.py), in order."""
    return expand_inputs(paths)


def _decode(chunk: LinesChunk) -> str:
    try:
        return chunk.data.decode("utf-8")
    except UnicodeDecodeError as err:
        number = chunk.first_line + chunk.data.count(b"\n", 0, err.start)
        column = err.start - (chunk.data.rfind(b"\n", 0, err.start) + 1)
        raise DataError(f"{chunk.path}:{number}: not valid UTF-8 ({err.reason} at byte "
                        f"{column}); inputs must be UTF-8 text") from None


def _jsonl_documents(chunk: LinesChunk) -> list[str]:
    key, documents = chunk.json_key, []
    for number, line in enumerate(_decode(chunk).split("\n"), start=chunk.first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{chunk.path}:{number}: not valid JSON ({err.msg} at column {err.colno}); "
                f"each line must be one JSON object with a {key!r} string field"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{chunk.path}:{number}: expected a JSON object with a {key!r} "
                            f"field, got {type(record).__name__}")
        if key not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise DataError(f"{chunk.path}:{number}: no {key!r} field (fields present: {keys})")
        text = record[key]
        if not isinstance(text, str):
            got = "null" if text is None else type(text).__name__
            raise DataError(f"{chunk.path}:{number}: field {key!r} must be a string, got {got}")
        documents.append(text)
    try:
        "".join(documents).encode("utf-8")
    except UnicodeEncodeError:  # JSON can escape half a surrogate pair: "\ud800"
        _name_the_surrogate(chunk, documents)
    return documents


def _name_the_surrogate(chunk: LinesChunk, documents: list[str]) -> None:
    lines = [n for n, line in enumerate(_decode(chunk).split("\n"), start=chunk.first_line)
             if line.strip()]
    for number, text in zip(lines, documents):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(f"{chunk.path}:{number}: field {chunk.json_key!r} holds a lone "
                            f"surrogate {text[err.start]!r} at character {err.start}, which is "
                            "not a Unicode character; fix or drop that \\u escape") from None


def _text_documents(chunk: LinesChunk) -> list[str]:
    documents, block = [], []
    for line in _decode(chunk).split("\n"):
        line = line.rstrip("\r")
        if line.strip():
            block.append(line)
        elif block:
            documents.append("\n".join(block))
            block = []
    if block:
        documents.append("\n".join(block))
    return documents


def _column_documents(chunk: ColumnChunk) -> list[str]:
    arrays = [chunk.array] if chunk.array is not None else _row_group_arrays(chunk)
    documents, row = [], chunk.first_row
    for array in arrays:
        if array.null_count:
            first = array.is_null().to_pylist().index(True)
            raise DataError(f"{chunk.path}: row {row + first} (counting from 0) has no text "
                            f"(null in column {chunk.column!r}); drop or fill null rows")
        try:
            documents += array.to_pylist()
        except UnicodeDecodeError:
            bad = next(i for i in range(len(array)) if _invalid_utf8(array, i))
            raise DataError(f"{chunk.path}: row {row + bad} (counting from 0) of column "
                            f"{chunk.column!r} is not valid UTF-8") from None
        row += len(array)
    return documents


def _invalid_utf8(array, index: int) -> bool:
    try:
        array[index].as_py()
    except UnicodeDecodeError:
        return True
    return False


def _row_group_arrays(chunk: ColumnChunk) -> Iterator:
    import pyarrow.parquet as pq  # defer: pyarrow, only when reading Parquet

    try:
        for batch in pq.ParquetFile(chunk.path).iter_batches(
                batch_size=8192, row_groups=[chunk.row_group], columns=[chunk.column]):
            yield batch.column(0)
    except Exception as err:  # ArrowInvalid/OSError: a damaged row group
        raise DataError(f"{chunk.path}: row group {chunk.row_group} cannot be read "
                        f"({str(err).strip()})") from None


def chunk_documents(chunk: LinesChunk | ColumnChunk) -> list[str]:
    """The documents of one chunk, in order (see the module docstring for the formats)."""
    if isinstance(chunk, ColumnChunk):
        return _column_documents(chunk)
    return _jsonl_documents(chunk) if chunk.json_key is not None else _text_documents(chunk)


def read_documents(path: str | Path, json_key: str = "text") -> Iterator[str]:
    """The documents of one input (a file, directory or pattern), in order."""
    return iter_documents([path], json_key)


def iter_documents(paths: Iterable[str | Path], json_key: str = "text") -> Iterator[str]:
    """The documents of every input in order, in this process (the tokenizer trainer's reader)."""
    for unit in work_units(check_inputs(paths)):
        for chunk in unit_chunks(unit, json_key):
            yield from chunk_documents(chunk)
