"""Build the tokenizer and indexed dataset a sweep's base config names, when missing."""

from __future__ import annotations

from pathlib import Path

from megatron_ponder.config import Config
from megatron_ponder.data.corpus import write_default_corpus
from megatron_ponder.data.indexed import preprocess
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.data.tokenizer_training import train_tokenizer
from megatron_ponder.sweeps.spec import PrepareSpec, SweepError

EMBEDDED = "embedded"


def prepare_data(spec: PrepareSpec, cfg: Config, progress=print) -> None:
    if len(cfg.data.prefixes) != 1:
        raise SweepError(f"prepare needs exactly one base.data.prefixes entry to build, got "
                         f"{cfg.data.prefixes!r}")
    tokenizer = Path(cfg.data.tokenizer)
    prefix = Path(cfg.data.prefixes[0])
    if tokenizer.exists() and prefix.with_suffix(".idx").is_file():  # .model or HF folder
        return
    source = Path(spec.input)
    if spec.input == EMBEDDED:
        source = prefix.parent / "embedded_corpus.jsonl"
        if not source.is_file():
            progress(f"prepare: writing the embedded corpus to {source}")
            source.parent.mkdir(parents=True, exist_ok=True)
            write_default_corpus(source)
    elif not source.is_file():
        raise SweepError(f"prepare.input={spec.input!r} does not exist (a text/JSONL file or "
                         f"'{EMBEDDED}')")
    if not tokenizer.exists():
        if tokenizer.suffix != ".model":
            raise SweepError(f"base.data.tokenizer={str(tokenizer)!r} does not exist and must end "
                             "in .model to be built by prepare (a Hugging Face tokenizer is "
                             "brought, not trained here)")
        progress(f"prepare: training a {spec.vocab_size}-piece tokenizer on {source}")
        tokenizer.parent.mkdir(parents=True, exist_ok=True)
        train_tokenizer([source], tokenizer.with_suffix(""), spec.vocab_size)
    if not prefix.with_suffix(".idx").is_file():
        progress(f"prepare: tokenising {source} into {prefix}.bin/.idx")
        prefix.parent.mkdir(parents=True, exist_ok=True)
        preprocess([source], Tokenizer.load(tokenizer, cfg.data.eod_token), prefix, progress=False)
