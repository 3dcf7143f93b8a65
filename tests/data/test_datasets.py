"""build_datasets (megatron GPTDataset/BlendedDataset) and batch_for_step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import corpus, texts, tokenizer, write_jsonl
from megatron.core.datasets import gpt_dataset, helpers
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ponder.config import Config, ConfigError, DataConfig
from megatron_ponder.data.batches import batch_for_step
from megatron_ponder.data.datasets import build_datasets
from megatron_ponder.data.errors import DataError
from megatron_ponder.data.indexed import check_indexed_prefix, preprocess

REPO = Path(__file__).resolve().parents[2]
L = 32


@pytest.fixture(scope="module")
def world():
    """A single-process gloo world, as training runs it (rank 0 builds, then a barrier)."""
    from megatron_ponder.parallel import initialize_parallel

    initialize_parallel(Config())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Prefix `a`: the corpus as text (hundreds of paragraph documents); prefix `b`: the
    corpus as JSONL (one document per topic, ~25)."""
    root = tmp_path_factory.mktemp("datasets")
    jsonl = corpus(root)
    text = root / "corpus.txt"
    text.write_text("\n\n".join(texts(jsonl)))
    tok = tokenizer(root, [jsonl])
    preprocess([text], tok, root / "a", progress=False)
    preprocess([jsonl], tok, root / "b", progress=False)
    return root, tok


def _build(data, cache, prefixes=("a", "b"), weights=(0.25, 0.75), split="80,15,5",
           num_samples=(400, 40, 0), **kwargs):
    root, tok = data
    cfg = DataConfig(prefixes=[str(root / p) for p in prefixes], weights=list(weights),
                     split=split, seq_length=L)
    return build_datasets(cfg, vocab_size=tok.vocab_size, eod_id=tok.eod_id, seed=5,
                          num_samples=num_samples, cache_dir=cache, **kwargs)


def _documents(prefix: Path) -> set[tuple[int, ...]]:
    data = IndexedDataset(str(prefix))
    return {tuple(data[i][:-1].tolist()) for i in range(len(data))}  # without the EOD


def _is_slice_of_documents(seq: list[int], docs: set, eod: int) -> bool:
    """seq = suffix of a document, EOD, whole documents, EOD, ..., prefix of a document."""
    pieces = [tuple(p) for p in np.split(np.array(seq), np.flatnonzero(np.array(seq) == eod))]
    pieces = [pieces[0]] + [p[1:] for p in pieces[1:]]  # drop the EODs
    def contains(piece, where):
        return any(where(doc, piece) for doc in docs)
    if len(pieces) == 1:
        return contains(pieces[0], lambda d, p: any(d[i:i + len(p)] == p for i in range(len(d))))
    return (contains(pieces[0], lambda d, p: d[len(d) - len(p):] == p or not p)
            and all(p in docs for p in pieces[1:-1])
            and contains(pieces[-1], lambda d, p: d[:len(p)] == p))


def test_blend_sizes_items_and_labels(world, data, tmp_path):
    root, tok = data
    train, valid, test = _build(data, tmp_path / "cache")
    assert test is None  # 0 test samples asked for: not built
    assert len(train) == 400 and len(valid) == 40  # ceil(n * w) per prefix, summed
    ids = np.array([int(train[i]["dataset_id"]) for i in range(len(train))])
    assert abs((ids == 0).sum() - 100) <= 1 and abs((ids == 1).sum() - 300) <= 1  # 1:3 blend
    docs = [_documents(root / "a"), _documents(root / "b")]
    for dataset in (train, valid):
        for i in range(0, len(dataset), 7):
            item = dataset[i]
            assert sorted(item) == ["dataset_id", "labels", "loss_mask", "position_ids", "tokens"]
            for key, dtype in [("tokens", torch.int64), ("labels", torch.int64),
                               ("loss_mask", torch.float32), ("position_ids", torch.int64)]:
                assert item[key].shape == (L,) and item[key].dtype == dtype
            assert torch.equal(item["labels"][:-1], item["tokens"][1:])  # next-token targets
            assert torch.equal(item["loss_mask"], torch.ones(L))
            assert torch.equal(item["position_ids"], torch.arange(L))
            seq = item["tokens"].tolist() + [int(item["labels"][-1])]
            assert _is_slice_of_documents(seq, docs[int(item["dataset_id"])], tok.eod_id)
            assert not _is_slice_of_documents(seq[::-1], docs[int(item["dataset_id"])],
                                              tok.eod_id)  # the check can fail


def test_index_cache_is_reused(world, data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = _build(data, cache)
    # megatron's files (ours: the build lock, the token ranges)
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if "Dataset-" in p.name}
    # train and valid: 4 GPTDataset files per prefix and split, 3 BlendedDataset files per split
    assert len(files) == 2 * 2 * 4 + 2 * 3

    def must_not_run(*args, **kwargs):
        raise AssertionError("an index was rebuilt instead of loaded from the cache")

    for module, name in [(helpers, "build_sample_idx"), (helpers, "build_blending_indices"),
                         (gpt_dataset, "_build_document_index")]:
        monkeypatch.setattr(module, name, must_not_run)
    second = _build(data, cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if "Dataset-" in p.name} == files
    for a, b in zip(first[:2], second[:2]):
        assert len(a) == len(b)
        for i in range(len(a)):
            assert torch.equal(a[i]["tokens"], b[i]["tokens"])


def test_changed_data_does_not_reuse_stale_indices(world, data, tmp_path):
    root, tok = data
    cache = tmp_path / "cache"
    write_jsonl(tmp_path / "c.jsonl", texts(root / "corpus.jsonl")[:20])
    preprocess([tmp_path / "c.jsonl"], tok, tmp_path / "c", progress=False)
    cfg = dict(prefixes=("a", str(tmp_path / "c")), num_samples=(100, 10, 0))
    _build(data, cache, **cfg)
    before = set(os.listdir(cache))
    write_jsonl(tmp_path / "c.jsonl", texts(root / "corpus.jsonl")[:15])  # same prefix, new data
    preprocess([tmp_path / "c.jsonl"], tok, tmp_path / "c", progress=False)
    train, _, _ = _build(data, cache, **cfg)
    assert set(os.listdir(cache)) - before  # new indices for the new data
    docs = _documents(tmp_path / "c")
    for i in range(len(train)):
        if int(train[i]["dataset_id"]) == 1:
            seq = train[i]["tokens"].tolist() + [int(train[i]["labels"][-1])]
            assert _is_slice_of_documents(seq, docs, tok.eod_id)


def test_empty_weights_blend_by_token_count(world, data, tmp_path):
    root, tok = data
    write_jsonl(tmp_path / "c.jsonl", texts(root / "corpus.jsonl")[:4])
    tokens = {"c": preprocess([tmp_path / "c.jsonl"], tok, tmp_path / "c", progress=False).tokens,
              "a": check_indexed_prefix(root / "a").num_tokens}
    train, _, _ = _build(data, tmp_path / "cache", prefixes=("a", str(tmp_path / "c")),
                         weights=(), num_samples=(500, 10, 0))
    share = tokens["c"] / (tokens["a"] + tokens["c"])
    assert 0.05 < share < 0.5  # a real test of the weighting, not of a 50:50 blend
    from_c = sum(int(train[i]["dataset_id"]) for i in range(500))
    assert abs(from_c - share * 500) <= 1.5  # megatron rounds each part up to whole samples


def test_single_prefix_default_split(world, data, tmp_path):
    train, valid, test = _build(data, tmp_path / "cache", prefixes=("a",), weights=(),
                                split="969,30,1", num_samples=(300, 20, 0))
    assert type(train).__name__ == "GPTDataset"  # no blend for a single prefix
    assert len(train) >= 300 and len(valid) >= 20 and test is None
    assert "dataset_id" not in train[0]


def test_clear_errors(world, data, tmp_path):
    root, tok = data
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"data.split='969,30,1' gives the test split documents "
                                        r"\[(\d+), \1\) of the \1 in .*/a: 0 tokens"):
        _build(data, cache, split="969,30,1", num_samples=(10, 2, 2))
    with pytest.raises(ConfigError, match=r"gives the valid split no documents, but 2 valid"):
        _build(data, cache, split="100,0,0", num_samples=(10, 2, 0))
    with pytest.raises(DataError, match=r"nope\.idx does not exist"):
        _build(data, cache, prefixes=("a", "nope"))
    with pytest.raises(ConfigError, match=r"data.prefixes is empty"):
        _build(data, cache, prefixes=(), weights=())
    with pytest.raises(ConfigError, match=r"data.cache_dir is empty"):
        _build(data, "")
    cfg = DataConfig(prefixes=[str(root / "a")], seq_length=L, split="80,15,5")
    with pytest.raises(DataError, match=r"a\.bin holds uint16 token ids, but a vocabulary of "
                                        r"70000 tokens is stored as int32"):
        build_datasets(cfg, vocab_size=70000, eod_id=1, seed=1, num_samples=(5, 0, 0),
                       cache_dir=cache)
    assert not cache.exists() or not os.listdir(cache)  # nothing built by a refused call


def test_batch_for_step(world, data, tmp_path):
    train, _, _ = _build(data, tmp_path / "cache")
    step, gbs = 7, 8
    one = batch_for_step(train, step, gbs, 2)
    assert len(one) == 4
    for mb in one:
        assert {k: (tuple(v.shape), v.dtype) for k, v in mb.items()} == {
            "tokens": ((2, L), torch.int64), "labels": ((2, L), torch.int64),
            "loss_mask": ((2, L), torch.float32)}
    expected = torch.stack([train[i]["tokens"] for i in range(step * gbs, (step + 1) * gbs)])
    assert torch.equal(torch.cat([mb["tokens"] for mb in one]), expected)
    # two data-parallel ranks split the same global batch, megatron's sampler layout
    ranks = [batch_for_step(train, step, gbs, 2, dp_rank=r, dp_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    interleaved = [ranks[r][a]["tokens"] for a in range(2) for r in range(2)]
    assert torch.equal(torch.cat(interleaved), expected)
    # a resumed run (datasets rebuilt from the cache) sees the same batch at that step
    again, _, _ = _build(data, tmp_path / "cache")
    for a, b in zip(one, batch_for_step(again, step, gbs, 2)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(one[0]["tokens"], batch_for_step(train, step + 1, gbs, 2)[0]["tokens"])
    with pytest.raises(IndexError, match=r"step 50 needs samples up to 408, but the dataset "
                                         r"has 400"):
        batch_for_step(train, 50, gbs, 2)
    with pytest.raises(ValueError, match=r"global_batch_size=6 must be a positive multiple of "
                                         r"micro_batch_size \* dp_size = 4"):
        batch_for_step(train, 0, 6, 2, dp_rank=0, dp_size=2)


SCRIPT = """
import sys, warnings
warnings.filterwarnings("ignore")
import torch.distributed as dist
from megatron_ponder.config import DataConfig
from megatron_ponder.data import Tokenizer, build_datasets
root, cache = sys.argv[1:]
tok = Tokenizer.load(f"{root}/tok.model")
cfg = DataConfig(prefixes=[f"{root}/a", f"{root}/b"], weights=[1.0, 1.0], split="80,15,5",
                 seq_length=32)
train, valid, test = build_datasets(cfg, vocab_size=tok.vocab_size, eod_id=tok.eod_id, seed=5,
                                    num_samples=(64, 8, 0), cache_dir=cache)
assert not dist.is_initialized()
print(len(train), len(valid), test, train[3]["tokens"].tolist())
"""


def test_builds_without_torch_distributed(world, data, tmp_path):
    """A fresh process without torch.distributed (e.g. a notebook) builds and reads a blend."""
    root, _ = data
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(tmp_path / "cache")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lengths = out.stdout.split(" [")[0]
    assert lengths == "64 8 None"
    train, _, _ = _build(data, tmp_path / "cache", weights=(1.0, 1.0), num_samples=(64, 8, 0))
    assert out.stdout.strip().endswith(str(train[3]["tokens"].tolist()))  # same cache, same data
