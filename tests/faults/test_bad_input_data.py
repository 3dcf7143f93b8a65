"""Bad or broken data: token ids the vocabulary does not hold, and index caches cut short by
a full disk or a crash."""

import os
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from filesystems import resize, tmpfs
from megatron_ponder.config import DataConfig
from megatron_ponder.data.datasets import build_datasets
from megatron_ponder.data.errors import DataError

LARGEST = 600  # a token id of another tokenizer: the tiny model's vocabulary has 512


@pytest.fixture
def foreign_prefix(tmp_path) -> str:
    """An indexed dataset (megatron's own writer, uint16 as for a 512 vocabulary) whose
    ids come from a larger vocabulary: one id 600 among ids < 512."""
    prefix = str(tmp_path / "foreign" / "corpus_text_document")
    Path(prefix).parent.mkdir()
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    rng = np.random.default_rng(0)
    for doc in range(50):
        ids = rng.integers(2, 512, size=40)
        if doc == 31:
            ids[17] = LARGEST
        builder.add_document(np.append(ids, 1), [41])
    builder.finalize(prefix + ".idx")
    return prefix


def test_token_ids_beyond_the_vocabulary_exit_2_before_anything_is_written(
        train_cli, tiny_recipe, foreign_prefix, tmp_path):
    result = train_cli(tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run"),
                       f"data.prefixes=[{foreign_prefix}]")
    assert result.returncode == 2
    assert (f"{foreign_prefix}.bin holds token id {LARGEST}, but data.tokenizer has 512 ids "
            "(model.vocab_size=512)") in result.stderr, result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "index_cache").exists()


def test_the_largest_id_is_cached_until_the_file_changes(tiny_data, tmp_path, monkeypatch):
    from megatron_ponder.data import token_range

    prefix, cache = tiny_data["prefix"], tmp_path / "cache"
    largest = token_range.check_token_ids(prefix, np.uint16, 512, 512, cache)
    tokens = np.memmap(prefix + ".bin", dtype=np.uint16, mode="r")
    assert largest == int(tokens.max()) and 400 < largest < 512  # 512-piece tokenizer

    def must_not_scan(*args):
        raise AssertionError("scanned although the cached result still applies")

    monkeypatch.setattr(token_range, "scan_largest_id", must_not_scan)
    assert token_range.check_token_ids(prefix, np.uint16, 512, 512, cache) == largest
    # A rewritten .bin (new modification time) is scanned again.
    stat = os.stat(prefix + ".bin")
    os.utime(prefix + ".bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with pytest.raises(AssertionError, match="scanned although"):
        token_range.check_token_ids(prefix, np.uint16, 512, 512, cache)


def build(tiny_data, cache: Path):
    cfg = DataConfig(prefixes=[tiny_data["prefix"]], split="90,10,0", seq_length=16)
    return build_datasets(cfg, vocab_size=512, eod_id=1, seed=5, num_samples=(24, 4, 0),
                          cache_dir=cache)


def tokens_of(dataset) -> list:
    return [dataset[i]["tokens"].tolist() for i in range(len(dataset))]


def test_a_truncated_index_cache_is_rebuilt(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    expected = tokens_of(build(tiny_data, cache)[0])
    # A crash (or full disk) while writing the last file of a set: all four files exist.
    (shuffle,) = cache.glob("*-GPTDataset-train-shuffle_index.npy")
    shuffle.write_bytes(shuffle.read_bytes()[:1000])
    assert tokens_of(build(tiny_data, cache)[0]) == expected
    assert shuffle.stat().st_size > 1000


def test_a_full_disk_during_the_cache_build_leaves_nothing_half_written(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    expected = tokens_of(build(tiny_data, tmp_path / "roomy")[0])
    # 96 KiB: the train set's description, document and sample indices fit (76 KiB in
    # 4 KiB pages, with the token-range record), its 33 KiB shuffle index does not.
    with tmpfs(cache, "96k"):
        with pytest.raises(DataError, match=rf"writing the dataset index cache in "
                                            rf"data.cache_dir='{cache}' failed \(.*; 0.0 MiB "
                                            r"free there\); the partial files were removed"):
            build(tiny_data, cache)
        assert not list(cache.glob("*Dataset*"))
        resize(cache, "1m")  # space freed: the next run builds and trains
        assert tokens_of(build(tiny_data, cache)[0]) == expected
