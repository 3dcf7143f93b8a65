"""Corpora as published: every input format, worker count and partitioning gives the same
tokens, byte for byte, as one worker reading one plain JSONL file; training runs on them."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafiles import corpus, texts, tokenizer, write_jsonl
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ponder.data import sources
from megatron_ponder.data.indexed import merge, preprocess

DOCS = 240  # paragraphs of the embedded corpus; 2 KB chunks below make dozens


@pytest.fixture(scope="module")
def corpus_docs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("formats")
    path = corpus(directory)
    # The embedded corpus holds a few long documents: its paragraphs make many short ones.
    docs = [p for text in texts(path) for p in text.split("\n\n")][:DOCS]
    assert len(docs) == DOCS
    docs[7] = "   "  # an empty document: skipped (and counted) in every format
    return directory, tokenizer(directory, [path]), docs


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """2 KB chunks, so documents straddle many chunk and worker boundaries."""
    monkeypatch.setattr(sources, "CHUNK_BYTES", 2048)


def pair(prefix) -> tuple[bytes, bytes]:
    return Path(f"{prefix}.bin").read_bytes(), Path(f"{prefix}.idx").read_bytes()


def jsonl_bytes(docs) -> bytes:
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


def write_formats(directory: Path, docs: list[str]) -> dict[str, list[str]]:
    """The same documents in every format: {name: the --input arguments}."""
    raw = jsonl_bytes(docs)
    inputs = {"jsonl": [str(write_jsonl(directory / "c.jsonl", docs))]}
    for suffix, compress in ((".gz", gzip.compress), (".bz2", bz2.compress),
                             (".xz", lzma.compress)):
        (directory / f"c.jsonl{suffix}").write_bytes(compress(raw))
        inputs[suffix] = [str(directory / f"c.jsonl{suffix}")]
    with pa.output_stream(str(directory / "c.jsonl.zst"), compression="zstd") as stream:
        stream.write(raw)
    inputs[".zst"] = [str(directory / "c.jsonl.zst")]
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, directory / "c.parquet", row_group_size=50)  # 5 row groups
    assert pq.ParquetFile(directory / "c.parquet").metadata.num_row_groups == 5
    inputs["parquet"] = [str(directory / "c.parquet")]
    # Shards in a directory and behind a glob: read in sorted order of their names.
    shards = directory / "shards"
    shards.mkdir()
    for i, start in enumerate(range(0, len(docs), 70)):
        write_jsonl(shards / f"part-{i:02d}.jsonl", docs[start:start + 70])
    (shards / ".hidden.jsonl").write_text("not read\n")
    inputs["directory"] = [str(shards)]
    inputs["glob"] = [str(shards / "part-0[0-1].jsonl"), str(shards / "part-0[2-9].jsonl")]
    datasets = pytest.importorskip("datasets")
    saved = directory / "saved"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(saved), max_shard_size="20KB")
    assert len(list(saved.glob("*.arrow"))) > 1  # several shards, read in state.json's order
    inputs["save_to_disk"] = [str(saved)]
    # A tree holding shards and a save_to_disk folder: the folder is read as a dataset
    # (not its state.json as JSONL), in path order: tree/a/ before tree/b.jsonl.
    tree = directory / "tree"
    tree.mkdir()
    datasets.Dataset.from_dict({"text": docs[:100]}).save_to_disk(str(tree / "a"))
    write_jsonl(tree / "b.jsonl", docs[100:])
    inputs["tree"] = [str(tree)]
    return inputs


def test_every_format_gives_the_same_tokens(corpus_docs, tmp_path):
    directory, tok, docs = corpus_docs
    formats = write_formats(tmp_path, docs)
    reference = preprocess(formats["jsonl"], tok, tmp_path / "ref", progress=False)
    assert (reference.documents, reference.skipped_empty) == (DOCS - 1, 1)
    data = IndexedDataset(str(tmp_path / "ref"))
    kept = [d for d in docs if d.strip()]
    for i in (0, 100, len(kept) - 1):
        assert data[i].tolist() == tok.encode(kept[i]) + [tok.eod_id]
    expected = pair(tmp_path / "ref")
    for name, inputs in formats.items():
        stats = preprocess(inputs, tok, tmp_path / "out" / name, progress=False)
        assert pair(tmp_path / "out" / name) == expected, name
        assert (stats.documents, stats.tokens) == (reference.documents, reference.tokens)


def test_plain_text_matches_jsonl(corpus_docs, tmp_path):
    _, tok, docs = corpus_docs
    # Text documents cannot hold blank lines (they separate documents): those kept here.
    plain = [d for d in docs if d.strip() and all(line.strip() for line in d.split("\n"))]
    assert len(plain) > 50
    (tmp_path / "c.txt").write_text("\n\n \n".join(plain) + "\n")
    with gzip.open(tmp_path / "c.txt.gz", "wt") as stream:
        stream.write("\n\n".join(plain))
    preprocess([write_jsonl(tmp_path / "c.jsonl", plain)], tok, tmp_path / "ref", progress=False)
    for name in ("c.txt", "c.txt.gz"):
        preprocess([tmp_path / name], tok, tmp_path / name, progress=False)
        assert pair(tmp_path / name) == pair(tmp_path / "ref"), name


def test_workers_and_partitions_are_byte_identical(corpus_docs, tmp_path):
    _, tok, docs = corpus_docs
    table = pa.table({"text": docs})
    shards = tmp_path / "in"
    shards.mkdir()
    for i, start in enumerate(range(0, len(docs), 60)):  # 4 files x 3 row groups
        pq.write_table(table.slice(start, 60), shards / f"{i}.parquet", row_group_size=20)
    preprocess([shards], tok, tmp_path / "one", progress=False)
    preprocess([shards], tok, tmp_path / "two", workers=2, progress=False)
    assert pair(tmp_path / "two") == pair(tmp_path / "one")
    for index in range(5):
        stats = preprocess([shards], tok, tmp_path / "parts", workers=2, partition=index,
                           partitions=5, progress=False)
        assert 0 < stats.documents < len(docs)
    merged = merge(tmp_path / "parts", 5, progress=False)
    assert pair(tmp_path / "parts") == pair(tmp_path / "one")
    assert merged.documents == len(docs) - 1


def test_training_runs_on_the_merged_corpus(corpus_docs, tmp_path):
    """The formats above give byte-identical files, so one run covers them all."""
    from tiny_runs import run_dict

    from megatron_ponder.config import config_from_dict
    from megatron_ponder.run.exit_codes import EXIT_DONE
    from megatron_ponder.training.trainer import Trainer

    _, tok, docs = corpus_docs
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": docs}), path, row_group_size=40)
    for index in range(2):
        preprocess([path], tok, tmp_path / "corpus", partition=index, partitions=2,
                   progress=False)
    merge(tmp_path / "corpus", 2, progress=False)
    data = {"tokenizer": str(tok.path), "prefix": str(tmp_path / "corpus")}
    config = config_from_dict(run_dict(data, tmp_path / "run", steps=3, save_interval=3,
                                       eval_batches=1))
    assert Trainer(config).train() == EXIT_DONE
    losses = [json.loads(line).get("loss") for line in
              (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x for x in losses if x is not None]
    assert losses and all(np.isfinite(losses)) and 0 < losses[0] < 10


def test_progress_names_the_part_and_counts(corpus_docs, tmp_path, capsys, monkeypatch):
    from megatron_ponder.data import progress

    _, tok, docs = corpus_docs
    monkeypatch.setattr(progress.Progress.__init__, "__defaults__", (True, 0.0))  # every chunk
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    stats = preprocess([path, path], tok, tmp_path / "out", partition=1, partitions=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) > 10  # a line per chunk here (every 30 s into a log file)
    final = lines[-1]
    assert final.startswith(f"part 1 of 2: {stats.documents:,} documents, "
                            f"{stats.tokens:,} tokens, ")
    megabytes = float(final.split("tokens, ")[1].split(" MB")[0])
    assert megabytes == pytest.approx(path.stat().st_size / 1e6, abs=0.05)
    assert "tokens/s" in final and "MB/s" in final
