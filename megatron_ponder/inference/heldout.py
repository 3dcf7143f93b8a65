"""Held-out batches of a checkpoint's data for the inference tools: the sequences eval_ppl
scores and the ones a FLOPs budget is calibrated on (inference/budget.py)."""

from __future__ import annotations

import tempfile

from megatron_ponder.config import Config, ConfigError
from megatron_ponder.data.batches import batch_for_step
from megatron_ponder.data.datasets import build_datasets
from megatron_ponder.data.tokenizer import Tokenizer, check_fits

SPLITS = {"valid": 1, "test": 2}


def heldout_batches(cfg: Config, *, split: str, samples: int, batch_size: int, data_seed: int,
                    start: int = 0) -> list[dict]:
    """Batches of sequences [start, start + samples) of `split` of cfg.data.prefixes in the
    sample order of `data_seed` (rounded down to whole batches, at least one). start must be
    a multiple of batch_size. Sequences of one order are distinct tokens as long as the split
    holds start + samples of them (megatron repeats a split in a new epoch beyond that)."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is invalid: valid values: {', '.join(SPLITS)}")
    if samples < 1 or batch_size < 1:
        raise ConfigError("the number of samples and the batch size must be >= 1")
    if start % batch_size:
        raise ValueError(f"start={start} must be a multiple of batch_size={batch_size}")
    tokenizer = Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token)
    check_fits(tokenizer, cfg.model.vocab_size)
    num_samples = [1, 0, 0]
    num_samples[SPLITS[split]] = start + samples
    with tempfile.TemporaryDirectory(prefix="heldout_index_") as cache:
        datasets = build_datasets(cfg.data, vocab_size=tokenizer.vocab_size,
                                  eod_id=tokenizer.eod_id, seed=data_seed,
                                  num_samples=tuple(num_samples), cache_dir=cache,
                                  model_vocab_size=cfg.model.vocab_size)
        data = datasets[SPLITS[split]]
        if data is None or len(data) == 0:
            raise ConfigError(f"the {split} split of {cfg.data.prefixes} is empty "
                              f"(data.split={cfg.data.split!r})")
        count = max((min(start + samples, len(data)) - start) // batch_size, 1)
        first = start // batch_size
        return [b for i in range(first, first + count)
                for b in batch_for_step(data, i, batch_size, batch_size)]
