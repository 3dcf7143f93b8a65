"""Bad corpora as published (truncated compressed files, Parquet without the column or with
nulls, invalid UTF-8, empty files) and damaged parts of a partitioned run: exit 2 naming the
file and the line or row, and no partial output; a damaged part is redone, never merged."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import preprocess_data as preprocess_tool  # noqa: E402

LINES = 400  # ~20 KB of JSONL: with 4 KB chunks the faults below sit in a later chunk


def jsonl(count: int = LINES) -> bytes:
    return "".join(json.dumps({"text": f"document number {i}, some words"}) + "\n"
                   for i in range(count)).encode()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    from megatron_ponder.data import sources

    monkeypatch.setattr(sources, "CHUNK_BYTES", 4096)


@pytest.fixture
def run(tiny_data, tmp_path, capsys):
    """preprocess_data.py in process: (exit code, stderr); output under tmp_path/out/."""
    def call(*inputs, extra=()):
        code = preprocess_tool.main(["--input", *map(str, inputs), "--tokenizer",
                                     tiny_data["tokenizer"], "--output-prefix",
                                     str(tmp_path / "out" / "c"), "--no-progress", *extra])
        return code, capsys.readouterr().err
    return call


def nothing_written(tmp_path) -> bool:
    return not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_gzip_names_file_and_line(run, tmp_path, workers):
    data = gzip.compress(jsonl())
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    code, err = run(path, extra=("--workers", str(workers)))
    assert code == 2, err
    assert f"{path}: cannot read past line" in err and "is the file truncated" in err, err
    line = int(err.split("cannot read past line ")[1].split()[0])
    assert 1 < line < LINES  # where the damage is, not line 0 or the end
    assert nothing_written(tmp_path)


def test_truncated_zstd_names_file(run, tmp_path):
    path = tmp_path / "c.jsonl.zst"
    with pa.output_stream(str(path), compression="zstd") as stream:
        stream.write(jsonl(4000))
    os.truncate(path, path.stat().st_size // 2)
    code, err = run(path)
    assert code == 2, err
    assert f"{path}: cannot read past line" in err and "is the file truncated" in err, err
    assert nothing_written(tmp_path)


def test_parquet_without_the_column_or_with_another_type(run, tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": ["a", "b"], "n": [1, 2]}), path)
    code, err = run(path)
    assert code == 2
    assert f"{path} has no column 'text' (columns: content, n); name the text column with " \
           "--text-key" in err, err
    code, err = run(path, extra=("--text-key", "n"))
    assert code == 2
    assert f"{path}: column 'n' has type int64, not a string" in err, err
    assert nothing_written(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_null_rows_name_the_row_or_line(run, tmp_path, workers):
    texts = [f"row {i}" for i in range(300)]
    texts[217] = None
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=100)
    code, err = run(path, extra=("--workers", str(workers)))
    assert code == 2
    assert f"{path}: row 217 (counting from 0) has no text (null in column 'text')" in err, err
    lines = jsonl().decode().splitlines()
    lines[311] = '{"text": null}'
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    code, err = run(tmp_path / "c.jsonl", extra=("--workers", str(workers)))
    assert code == 2
    assert f"{tmp_path / 'c.jsonl'}:312: field 'text' must be a string, got null" in err, err
    assert nothing_written(tmp_path)


def test_invalid_utf8_names_the_line_or_row(run, tmp_path):
    data = bytearray(jsonl())
    start = data.index(b"document number 250")
    data[start + 3] = 0xFF
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(bytes(data)))
    code, err = run(tmp_path / "c.jsonl.gz")
    assert code == 2
    assert f"{tmp_path / 'c.jsonl.gz'}:251: not valid UTF-8 (invalid start byte at byte 13)" \
        in err, err
    binary = pa.array([b"fine", b"caf\xe9", b"fine"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": binary}), tmp_path / "c.parquet")
    code, err = run(tmp_path / "c.parquet")
    assert code == 2
    assert f"{tmp_path / 'c.parquet'}: row 1 (counting from 0) of column 'text' is not valid " \
           "UTF-8" in err, err
    assert nothing_written(tmp_path)


def test_empty_inputs(run, tmp_path):
    (tmp_path / "zero.jsonl.gz").write_bytes(b"")
    code, err = run(tmp_path / "zero.jsonl.gz")
    assert code == 2 and f"input file {tmp_path / 'zero.jsonl.gz'} is empty (0 bytes)" in err
    (tmp_path / "blank.jsonl.gz").write_bytes(gzip.compress(b""))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    for name in ("blank.jsonl.gz", "none.parquet"):
        code, err = run(tmp_path / name)
        assert code == 2 and f"no non-empty document in {tmp_path / name}" in err, err
    (tmp_path / "empty").mkdir()
    code, err = run(tmp_path / "empty")
    assert code == 2 and f"input directory {tmp_path / 'empty'} holds no files" in err
    code, err = run(tmp_path / "nothing-*.parquet")
    assert code == 2 and "matches no file" in err
    assert nothing_written(tmp_path)


def test_a_damaged_part_is_redone_and_never_merged(run, tmp_path, capsys):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"row {i} text" for i in range(300)]}), path,
                   row_group_size=50)
    prefix = tmp_path / "out" / "c"
    parts = [f"{prefix}.part-{i:05d}-of-00003" for i in range(3)]

    def part(index: int) -> tuple[int, str]:
        return run(path, extra=("--partition", str(index), "--partitions", "3"))

    def merge() -> tuple[int, str]:
        code = preprocess_tool.main(["merge", "--output-prefix", str(prefix), "--partitions", "3"])
        return code, capsys.readouterr().err

    for index in range(3):
        assert part(index)[0] == 0
    good = Path(f"{parts[1]}.bin").read_bytes()
    mtime = os.stat(f"{parts[1]}.bin").st_mtime_ns
    assert part(1)[0] == 0 and os.stat(f"{parts[1]}.bin").st_mtime_ns == mtime  # kept
    # A flipped byte (same size, same name): the merge refuses it, a rerun redoes it.
    damaged = bytearray(good)
    damaged[10] ^= 1
    Path(f"{parts[1]}.bin").write_bytes(bytes(damaged))
    code, err = merge()
    assert code == 2
    assert (f"cannot merge {prefix}: 1 of 3 parts are not complete: part 1 ({parts[1]}.bin "
            "does not have the recorded checksum)") in err, err
    assert not Path(f"{prefix}.bin").exists() and not Path(f"{prefix}.idx").exists()
    assert part(1)[0] == 0
    assert Path(f"{parts[1]}.bin").read_bytes() == good
    # A missing file is named; the rerun of that part makes the merge possible.
    os.remove(f"{parts[2]}.idx")
    code, err = merge()
    assert code == 2 and f"part 2 ({parts[2]}.idx is missing" in err, err
    assert part(2)[0] == 0
    assert merge()[0] == 0
    # A changed input makes a part stale: redone, not kept.
    pq.write_table(pa.table({"text": [f"row {i} new" for i in range(300)]}), path,
                   row_group_size=50)
    before = Path(f"{parts[0]}.bin").read_bytes()
    assert part(0)[0] == 0
    assert Path(f"{parts[0]}.bin").read_bytes() != before  # the new text's tokens
