"""Preprocessing into PREFIX.bin/.idx, and the checks that run before training."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datafiles import corpus, texts, tokenizer, write_jsonl
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ponder.data.errors import DataError
from megatron_ponder.data.indexed import check_indexed_prefix, preprocess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    directory = tmp_path_factory.mktemp("indexed")
    return tokenizer(directory, [corpus(directory)])


@pytest.fixture
def prefix(tok, tmp_path):
    docs = ["first document", "second one,\nwith two lines", "third: ü ✓"]
    preprocess([write_jsonl(tmp_path / "docs.jsonl", docs)], tok, tmp_path / "out",
               progress=False)
    return str(tmp_path / "out")


def test_documents_read_back_exactly_with_eod(tok, tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("Para one,\nline two.\n\n\n   \nPara two.\r\nstill two\n\nlast\n")
    jsonl = write_jsonl(tmp_path / "b.jsonl", ["json doc", "", "  ", "another\n\njson doc"])
    stats = preprocess([text, jsonl], tok, tmp_path / "sub" / "out", progress=False)
    expected = ["Para one,\nline two.", "Para two.\nstill two", "last",
                "json doc", "another\n\njson doc"]
    assert (stats.documents, stats.skipped_empty) == (5, 2)
    data = IndexedDataset(str(tmp_path / "sub" / "out"))
    assert len(data) == 5 and data.index.dtype == np.uint16
    for i, doc in enumerate(expected):
        assert data[i].tolist() == tok.encode(doc) + [tok.eod_id]
        assert tok.decode(data[i][:-1].tolist()) == doc
    assert stats.tokens == sum(len(tok.encode(d)) + 1 for d in expected)
    info = check_indexed_prefix(tmp_path / "sub" / "out")
    assert (info.num_documents, info.num_tokens) == (5, stats.tokens)
    assert sorted(os.listdir(tmp_path / "sub")) == ["out.bin", "out.idx"]  # no temporaries


def test_jsonl_errors_name_the_line(tok, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:4: not valid JSON .*column 10"):
        preprocess([bad], tok, tmp_path / "out", progress=False)
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no 'text' field \(fields present: body\)"):
        preprocess([bad], tok, tmp_path / "out", progress=False)
    bad.write_text('{"text": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'text' must be a string, got int"):
        preprocess([bad], tok, tmp_path / "out", progress=False)
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: not valid UTF-8"):
        preprocess([bad], tok, tmp_path / "out", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]  # nothing written, no temporaries


def test_empty_corpus_writes_nothing(tok, tmp_path, prefix):
    before = {p: Path(prefix + p).read_bytes() for p in (".bin", ".idx")}
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "   \n  "])
    spaces = tmp_path / "spaces.txt"
    spaces.write_text("\n   \n\n")
    with pytest.raises(DataError) as err:
        preprocess([blank, spaces], tok, prefix, progress=False)
    message = str(err.value)
    assert "no non-empty document in" in message and "(2 empty documents skipped)" in message
    assert str(blank) in message and str(spaces) in message
    # the existing pair under that prefix is untouched, and no temporaries are left
    assert {p: Path(prefix + p).read_bytes() for p in (".bin", ".idx")} == before
    assert sorted(os.listdir(tmp_path)) == ["blank.jsonl", "docs.jsonl", "out.bin", "out.idx",
                                           "spaces.txt"]
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"input file .*empty\.txt is empty \(0 bytes\)"):
        preprocess([tmp_path / "empty.txt"], tok, tmp_path / "new", progress=False)


def test_missing_files(prefix):
    os.remove(prefix + ".bin")
    with pytest.raises(DataError, match=rf"{prefix}\.bin does not exist .*tools/preprocess_data"):
        check_indexed_prefix(prefix)
    with pytest.raises(DataError, match=rf"{prefix}2\.idx does not exist .*tools/preprocess_data"):
        check_indexed_prefix(prefix + "2")
    with pytest.raises(DataError, match=r"ends in \.bin: give the prefix without"):
        check_indexed_prefix(prefix + ".bin")


def test_truncated_or_mismatched_bin(prefix):
    info = check_indexed_prefix(prefix)
    size = os.path.getsize(prefix + ".bin")
    assert size == 2 * info.num_tokens
    os.truncate(prefix + ".bin", size - 2)
    with pytest.raises(DataError, match=rf"{prefix}\.bin is truncated: {size - 2} bytes, but "
                                        rf".*{info.num_tokens} tokens of uint16 = {size} bytes"):
        check_indexed_prefix(prefix)
    with open(prefix + ".bin", "ab") as stream:
        stream.write(b"\0" * 6)
    with pytest.raises(DataError, match=rf"{prefix}\.bin is longer than its index says"):
        check_indexed_prefix(prefix)


def test_truncated_or_corrupt_idx(prefix):
    idx = prefix + ".idx"
    good = Path(idx).read_bytes()
    Path(idx).write_bytes(good[:-3])
    with pytest.raises(DataError, match=rf"{idx} is truncated: {len(good) - 3} bytes, but its "
                                        r"header describes 3 sequences"):
        check_indexed_prefix(prefix)
    Path(idx).write_bytes(good[:20])
    with pytest.raises(DataError, match=rf"{idx} is truncated: 20 bytes, shorter than the "
                                        r"34-byte header"):
        check_indexed_prefix(prefix)
    Path(idx).write_bytes(b"NOTANIDX!" + good[9:])
    with pytest.raises(DataError, match=rf"{idx} is not a megatron indexed-dataset index"):
        check_indexed_prefix(prefix)
    lengths = bytearray(good)
    lengths[34:38] = (10**6).to_bytes(4, "little")  # first sequence length now disagrees
    Path(idx).write_bytes(bytes(lengths))
    with pytest.raises(DataError, match=rf"{idx} is corrupt: its sequence lengths and byte"):
        check_indexed_prefix(prefix)
    Path(idx).write_bytes(good)
    assert check_indexed_prefix(prefix).num_documents == 3


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_command_line_tools(tmp_path, capsys):
    """Both tools end to end: the tokenizer trainer as a user runs it (a fresh interpreter,
    so its import set-up is tested too), the preprocessor in-process (seconds cheaper)."""
    data = write_jsonl(tmp_path / "c.jsonl", texts(corpus(tmp_path, 60_000)))
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--input", str(data),
         "--output-prefix", str(tmp_path / "tok"), "--vocab-size", "400"],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert f"wrote {tmp_path / 'tok.model'} (bpe, vocab size 400" in out.stdout

    preprocess_main = _tool("preprocess_data")
    assert preprocess_main(["--input", str(data), "--tokenizer", str(tmp_path / "tok.model"),
                            "--output-prefix", str(tmp_path / "ds"), "--no-progress"]) == 0
    info = check_indexed_prefix(tmp_path / "ds")
    summary = f"{info.num_documents} documents, {info.num_tokens} tokens (uint16)"
    assert summary in capsys.readouterr().out
    assert info.num_documents == len(texts(data))
    assert preprocess_main(["--input", str(tmp_path / "none.txt"), "--tokenizer",
                            str(tmp_path / "tok.model"), "--output-prefix", "x"]) == 2
    err = capsys.readouterr().err
    assert "error: input file" in err and "none.txt does not exist" in err
    with pytest.raises(SystemExit) as exit_:
        _tool("train_tokenizer")(["--help"])
    assert exit_.value.code == 0 and "--no-byte-fallback" in capsys.readouterr().out
