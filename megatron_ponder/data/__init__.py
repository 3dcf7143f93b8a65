"""The data layer: tokenizers (sentencepiece or Hugging Face), indexed datasets, GPTDataset
splits, batches.

Pipeline: corpus files (sources.py: JSONL plain or compressed, Parquet, save_to_disk
folders, text; or the embedded default corpus) -> `train_tokenizer` -> `preprocess` into
PREFIX.bin/.idx (workers, partitions and `merge`: indexed.py, partitions.py) ->
`build_datasets` (megatron GPTDataset/BlendedDataset) -> `batch_for_step`. Each module's
docstring says why it is built the way it is.

Names are imported lazily: `tools/train_tokenizer.py` needs neither torch's data loaders nor
megatron-core's datasets, whose imports take seconds.
"""

import importlib

_EXPORTS = {
    "batch_for_step": "batches",
    "write_default_corpus": "corpus",
    "build_datasets": "datasets",
    "DataError": "errors",
    "IndexedInfo": "indexed",
    "check_indexed_prefix": "indexed",
    "preprocess": "indexed",
    "merge": "indexed",
    "Tokenizer": "tokenizer",
    "check_fits": "tokenizer",
    "train_tokenizer": "tokenizer_training",
    "train_bpe_tokenizer": "tokenizer_training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
