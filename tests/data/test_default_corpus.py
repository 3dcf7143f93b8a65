"""The embedded default corpus: real prose, no download, deterministic, cappable."""

from __future__ import annotations

import json
import os

import pytest

from megatron_ponder.data.corpus import write_default_corpus
from megatron_ponder.data.errors import DataError


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_capped_corpus_is_deterministic_and_within_the_cap(tmp_path, capsys):
    a = write_default_corpus(tmp_path / "a.jsonl", 100_000)
    size = os.path.getsize(a)
    assert f"{len(_records(a))} documents, {size / 1e6:.2f} MB" in capsys.readouterr().out
    b = write_default_corpus(tmp_path / "b.jsonl", 100_000, quiet=True)
    assert a.read_bytes() == b.read_bytes()
    # cut before the first document that would cross the cap (the next topic is < 50 KB)
    assert 50_000 < size <= 100_000
    records = _records(a)
    assert len(records) >= 10 and all(r["text"].strip() for r in records)
    assert records[0]["source"].startswith("pydoc_data.topics:")
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "b.jsonl"]  # no temporaries
    with pytest.raises(DataError, match=r"max_bytes=10 is smaller than the first document"):
        write_default_corpus(tmp_path / "c.jsonl", 10)
    assert not (tmp_path / "c.jsonl").exists()


def test_full_corpus_is_a_few_megabytes_of_prose(tmp_path):
    path = write_default_corpus(tmp_path / "full.jsonl", quiet=True)
    records = _records(path)
    size = os.path.getsize(path)
    assert size > 2_000_000  # 2.6 MB on CPython 3.11.7
    sources = [r["source"].split(":")[0] for r in records]
    assert sources.count("pydoc_data.topics") > 50 and sources.count("stdlib") > 400
    json_doc = next(r["text"] for r in records if r["source"] == "stdlib:json/__init__.py")
    assert json_doc.startswith("json\nJSON (JavaScript Object Notation)")
    assert "\njson.dumps\nSerialize ``obj``" in json_doc
    assert not any("/test/" in r["source"] for r in records)
