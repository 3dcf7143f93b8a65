"""Train/valid/test token datasets through megatron-core's GPTDataset and BlendedDataset.

`build_datasets` hands the configured prefixes, weights and split to megatron's
`BlendedMegatronDatasetBuilder`, so sampling, epoch handling, shuffling and the on-disk index
caches are megatron's own. What this module adds:

* every prefix is validated with `check_indexed_prefix` first (clear errors, not mmap ones),
  and every split that is asked for samples must hold documents and at least
  seq_length + 1 tokens in every prefix (megatron would otherwise loop forever on an empty
  split or fail an assert);
* empty `data.weights` means weights proportional to each prefix's token count, passed to
  megatron explicitly: with no weights, megatron caps a blend at one epoch of its parts;
* a split asked for 0 samples is not built at all (returned as None);
* every token id must lie below the tokenizer's vocabulary (token_range.py: one chunked
  scan of each .bin, its result cached);
* the index caches live in `cache_dir`, keyed by megatron's description hash (which knows
  the prefix names, not their contents), to which we add a fingerprint of each .bin/.idx
  (both sizes, the index's first and last MiB) so that re-preprocessing a prefix in place
  does not reuse stale indices; truncated caches (a full disk, a kill mid-build) are
  rebuilt and a failed build leaves no partial files (index_cache.py);
* megatron's BlendedDataset asks for the process rank when it builds its index, so without
  torch.distributed a temporary single-process gloo group (in-memory store, no port) is set
  up for the build and torn down after it.

Every item of a returned dataset is a dict of tensors of length seq_length:
``tokens`` (int64), ``labels`` (int64, tokens shifted left by one: the next token),
``loss_mask`` (float32, all ones: no padding, EOD tokens are learnt) and ``position_ids``
(int64, 0..seq_length-1); items of a blend of several prefixes also carry ``dataset_id``
(a numpy int16 scalar: the index of the prefix). Sequences run across document boundaries,
separated by the EOD token; `batch_for_step` (batches.py) stacks them into micro-batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch.distributed as dist
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.utils import Split

from megatron_ponder.config import ConfigError, DataConfig
from megatron_ponder.data.errors import DataError
from megatron_ponder.data.index_cache import guarded_build
from megatron_ponder.data.indexed import IndexedInfo, check_indexed_prefix, token_dtype
from megatron_ponder.data.token_range import check_token_ids


class _TokenizerInfo:
    """The slice of a megatron tokenizer GPTDataset reads: vocab size, eod, pad (none: -1),
    and `unique_identifiers`, which megatron hashes into the cache file names."""

    def __init__(self, vocab_size: int, eod_id: int, fingerprint: dict):
        self.vocab_size, self.eod, self.pad = vocab_size, eod_id, -1
        self.unique_identifiers = OrderedDict(
            [("class", "megatron_ponder.sentencepiece"), ("vocab_size", vocab_size),
             ("eod", eod_id), ("data_fingerprint", fingerprint)])


def _fingerprint(prefix: str) -> str:
    digest = hashlib.sha1()
    for suffix in (".bin", ".idx"):
        digest.update(str(os.path.getsize(prefix + suffix)).encode())
    with open(prefix + ".idx", "rb") as stream:
        digest.update(stream.read(1 << 20))
        stream.seek(max(0, os.path.getsize(prefix + ".idx") - (1 << 20)))
        digest.update(stream.read())
    return digest.hexdigest()


def _check_vocab(info: IndexedInfo, vocab_size: int) -> None:
    if info.dtype != token_dtype(vocab_size):
        raise DataError(
            f"{info.prefix}.bin holds {info.dtype.__name__} token ids, but a vocabulary of "
            f"{vocab_size} tokens is stored as {token_dtype(vocab_size).__name__}: it was "
            "tokenised with a different tokenizer; re-run tools/preprocess_data.py with "
            "data.tokenizer")


def _check_splits(infos: list[IndexedInfo], matrix: list, num_samples, seq_length: int,
                  split: str) -> None:
    """The document range megatron gives each split must be able to serve its samples."""
    for info in infos:
        n = info.num_sequences
        for s in Split:
            if matrix[s.value] is None or not num_samples[s.value]:
                continue
            beg, end = (int(round(b * float(n))) for b in matrix[s.value])
            tokens = int(info.sequence_lengths[beg:end].sum())
            if tokens < seq_length + 1:
                raise DataError(
                    f"data.split={split!r} gives the {s.name} split documents [{beg}, {end}) "
                    f"of the {n} in {info.prefix}: {tokens} tokens, fewer than "
                    f"data.seq_length + 1 = {seq_length + 1}; use a larger corpus, another "
                    f"split, or ask for 0 {s.name} samples")


@contextlib.contextmanager
def _process_group():
    """A single-process gloo group for the build if torch.distributed is not initialised."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_datasets(
    data_cfg: DataConfig,
    *,
    vocab_size: int,
    eod_id: int,
    seed: int,
    num_samples: tuple[int, int, int],
    cache_dir: str | Path | None = None,
    model_vocab_size: int | None = None,
) -> GPTDatasetConfig:
    """Every check `build_datasets` makes, before anything but the token-range record (a
    passed scan) is written; the megatron config to hand to `build_checked`."""
    if not data_cfg.prefixes:
        raise ConfigError("data.prefixes is empty: list at least one PREFIX of a .bin/.idx "
                          "pair made by tools/preprocess_data.py")
    if len(num_samples) != 3 or any(n < 0 for n in num_samples) or num_samples[0] < 1:
        raise ValueError(f"num_samples={num_samples!r}: need (train >= 1, valid >= 0, "
                         "test >= 0)")
    cache = str(cache_dir or data_cfg.cache_dir)
    if not cache:
        raise ConfigError("data.cache_dir is empty and no cache_dir was given: GPTDataset "
                          "needs a directory for its index caches")
    prefixes = [os.path.abspath(p) for p in data_cfg.prefixes]
    infos = [check_indexed_prefix(p) for p in prefixes]
    for info in infos:
        _check_vocab(info, vocab_size)
    weights = list(data_cfg.weights) or [float(info.num_tokens) for info in infos]
    blend = (prefixes, None if len(prefixes) == 1 else [float(w) for w in weights])
    tokenizer = _TokenizerInfo(vocab_size, eod_id, {p: _fingerprint(p) for p in prefixes})
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=data_cfg.seq_length, blend=blend,
        split=data_cfg.split, path_to_cache=cache, tokenizer=tokenizer,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False, mmap_bin_files=True, num_dataset_builder_threads=1,
    )
    for s in Split:  # splits nobody asks for are not built (megatron would build an epoch)
        if num_samples[s.value] == 0:
            config.split_matrix[s.value] = None
    for s in Split:
        if num_samples[s.value] and config.split_matrix[s.value] is None:
            raise ConfigError(f"data.split={data_cfg.split!r} gives the {s.name} split no "
                              f"documents, but {num_samples[s.value]} {s.name} samples were "
                              "asked for")
    _check_splits(infos, config.split_matrix, num_samples, data_cfg.seq_length, data_cfg.split)
    for info in infos:  # the last check: a passing scan is cached in `cache`
        check_token_ids(info.prefix, info.dtype, vocab_size, model_vocab_size, cache)
    return config


def build_checked(config: GPTDatasetConfig, num_samples: tuple[int, int, int]):
    """The datasets of a config from `check_datasets` (same num_samples); see build_datasets."""
    with _process_group():
        # Rank 0 builds missing caches while the others wait at megatron's barrier.
        building = dist.get_rank() == 0
        with guarded_build(config.path_to_cache) if building else contextlib.nullcontext():
            train, valid, test = BlendedMegatronDatasetBuilder(
                GPTDataset, list(num_samples), lambda: True, config).build()
    return train, valid, test


def build_datasets(data_cfg: DataConfig, *, num_samples: tuple[int, int, int], **checks
                   ) -> tuple[GPTDataset | None, GPTDataset | None, GPTDataset | None]:
    """(train, valid, test) datasets of at least num_samples[i] items each (None where 0).

    checks: check_datasets' keywords (vocab_size: the tokenizer's, every token id must be
    below it; eod_id; seed; cache_dir, None = data_cfg.cache_dir; model_vocab_size). Call on
    every rank: rank 0 builds the caches, the others wait at a barrier and then load them.
    """
    config = check_datasets(data_cfg, num_samples=num_samples, **checks)
    return build_checked(config, num_samples)
