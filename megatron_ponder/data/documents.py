"""Reading raw documents from plain-text and JSONL files, streaming, with precise errors.

Two input formats, chosen by the file name:

* ``.jsonl`` / ``.json`` / ``.ndjson``: one JSON object per line, the document in a string
  field (``text`` unless told otherwise). Blank lines are skipped. A malformed line or a
  missing field is an error that names the file and the line number.
* anything else: UTF-8 text in which documents are separated by one or more blank lines
  (lines holding only whitespace). The lines of a document are kept verbatim, joined by
  ``\\n``; the separating blank lines are not part of any document.

Files are read line by line (never whole), so corpora larger than memory stream through.
Documents that are empty or only whitespace are yielded as they are; callers skip them
(the preprocessor counts them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from megatron_ponder.data.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in JSONL_SUFFIXES


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The input paths as Paths; DataError if the list is empty or a file is missing or empty."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no input files given: pass at least one .txt or .jsonl file")
    for path in paths:
        if not path.exists():
            raise DataError(f"input file {path} does not exist")
        if not path.is_file():
            raise DataError(f"input {path} is not a regular file (pass .txt or .jsonl files)")
        if path.stat().st_size == 0:
            raise DataError(f"input file {path} is empty (0 bytes)")
    return paths


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending), decoding each line as UTF-8."""
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start}); "
                    "inputs must be UTF-8 text"
                ) from None
            yield number, line.rstrip("\r\n")


def _jsonl_documents(path: Path, key: str) -> Iterator[str]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}); "
                f"each line must be one JSON object with a {key!r} string field"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with a {key!r} field, "
                            f"got {type(record).__name__}")
        if key not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise DataError(f"{path}:{number}: no {key!r} field (fields present: {keys})")
        text = record[key]
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: field {key!r} must be a string, "
                            f"got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON can escape half a surrogate pair: "\ud800"
            raise DataError(f"{path}:{number}: field {key!r} holds a lone surrogate "
                            f"{text[err.start]!r} at character {err.start}, which is not a "
                            "Unicode character; fix or drop that \\u escape") from None
        yield text


def _text_documents(path: Path) -> Iterator[str]:
    block: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def read_documents(path: str | Path, json_key: str = "text") -> Iterator[str]:
    """The documents of one file (format from its suffix, see the module docstring)."""
    path = Path(path)
    return _jsonl_documents(path, json_key) if is_jsonl(path) else _text_documents(path)


def iter_documents(paths: Iterable[str | Path], json_key: str = "text") -> Iterator[str]:
    """The documents of every file in order (checks the files exist and are non-empty first)."""
    for path in check_inputs(paths):
        yield from read_documents(path, json_key)
