"""The sentencepiece tokenizer: loading with clear errors, the fit check, and training.

Training is set up so that a trained model is a faithful, reproducible text codec:

* ``normalization_rule_name="identity"`` and ``remove_extra_whitespaces=False``: no NFKC and no
  whitespace collapsing, so ``decode(encode(text)) == text`` (with byte fallback, for any text);
* ``byte_fallback=True`` (default): characters outside the vocabulary become their UTF-8 bytes
  (256 reserved pieces) instead of ``<unk>``; ``"\\n"`` is a user-defined piece so line
  structure survives; ``split_digits`` and whitespace-only pieces help code and numbers;
* ids: ``<unk>`` = 0, ``</s>`` = 1 (the end-of-document token appended to every document),
  no ``<s>`` and no pad piece: GPTDataset never pads training sequences;
* determinism: one thread, a fixed sentencepiece random seed (it drives the sampling of
  ``input_sentence_size`` sentences from larger corpora), inputs read in the given order, so
  the same inputs give byte-identical models;
* the vocabulary size is exact (``hard_vocab_limit`` stays on): a corpus too small for the
  requested size is an error that says the largest size it supports.

The trainer reads "sentences": the non-blank lines of every document (see documents.py),
split into pieces of at most ``max_sentence_length`` bytes so that no long line is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from megatron_ponder.config import ConfigError
from megatron_ponder.data.documents import check_inputs, iter_documents
from megatron_ponder.data.errors import DataError
from megatron_ponder.run_layout import check_output_prefix, write_atomically

MODEL_TYPES = ("bpe", "unigram")
HOW_TO_TRAIN = "train one with tools/train_tokenizer.py"


class Tokenizer:
    """A loaded sentencepiece model. Build with `Tokenizer.load(path)`."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path):
        self._sp = processor
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not str(path):
            raise DataError(f"no tokenizer model given (data.tokenizer is empty); {HOW_TO_TRAIN}")
        if not path.is_file():
            raise DataError(f"tokenizer model {path} does not exist; {HOW_TO_TRAIN}")
        processor = spm.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (RuntimeError, OSError) as err:
            raise DataError(f"tokenizer model {path} is not a sentencepiece model "
                            f"({str(err).strip()}); {HOW_TO_TRAIN}") from None
        if processor.eos_id() < 0:
            raise DataError(f"tokenizer model {path} has no end-of-document token (</s> is "
                            f"disabled, eos_id=-1); {HOW_TO_TRAIN}, which sets it")
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eod_id(self) -> int:
        """The end-of-document id (sentencepiece's </s>), appended to every document."""
        return self._sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Encode many texts at once; sentencepiece parallelises over `num_threads`."""
        return self._sp.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        """The vocabulary entry ('\u2581the', '<0x0A>', '</s>'), not its decoded text."""
        return self._sp.id_to_piece(int(token_id))

    def is_special(self, token_id: int) -> bool:
        """</s>, <unk> and other control pieces (no text of their own)."""
        return self._sp.is_control(int(token_id)) or self._sp.is_unknown(int(token_id))

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eod_id={self.eod_id})"


def check_fits(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """ConfigError if the tokenizer can produce ids the model's embedding has no row for."""
    if tokenizer.vocab_size > model_vocab_size:
        suggestion = -(-tokenizer.vocab_size // 128) * 128
        raise ConfigError(
            f"data.tokenizer={str(tokenizer.path)!r} has a vocabulary of {tokenizer.vocab_size} "
            f"tokens but model.vocab_size={model_vocab_size}: ids >= {model_vocab_size} would "
            f"have no embedding; set model.vocab_size >= {tokenizer.vocab_size} "
            f"(e.g. {suggestion}, a multiple of 128)"
        )


def _sentences(inputs: list[Path], json_key: str, max_bytes: int, count: list) -> Iterator[str]:
    """Non-blank lines of every document, cut to at most `max_bytes` UTF-8 bytes each."""
    step = max(1, max_bytes // 4)  # a character is at most 4 UTF-8 bytes
    for document in iter_documents(inputs, json_key):
        for line in document.split("\n"):
            if not line.strip():
                continue
            for start in range(0, len(line), step):
                count[0] += 1
                yield line[start:start + step]


def train_tokenizer(
    inputs: Sequence[str | Path],
    model_prefix: str | Path,
    vocab_size: int,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    *,
    json_key: str = "text",
    character_coverage: float | None = None,
    input_sentence_size: int = 2_000_000,
    max_sentence_length: int = 16384,
    num_threads: int = 1,
    seed: int = 1234,
    verbose: bool = False,
) -> Path:
    """Train a sentencepiece model on text/JSONL files; write PREFIX.model and PREFIX.vocab.

    character_coverage: share of characters that get their own piece; None = 0.9995 with
    byte fallback (rare characters become bytes) and 1.0 without (rare ones would be <unk>).
    input_sentence_size: at most this many sentences (lines) are sampled; 0 = all.
    num_threads > 1 trains faster but is not guaranteed to be bit-reproducible.
    Returns the path of the .model file (written atomically).
    """
    inputs = check_inputs(inputs)
    if model_type not in MODEL_TYPES:
        raise DataError(f"model_type={model_type!r} is invalid: valid values: "
                        f"{', '.join(MODEL_TYPES)}")
    minimum = (256 if byte_fallback else 0) + 3
    if vocab_size < minimum:
        raise DataError(f"vocab_size={vocab_size} is too small: must be >= {minimum} "
                        f"({'256 byte pieces + ' if byte_fallback else ''}<unk>, </s>, \\n)")
    if character_coverage is None:
        character_coverage = 0.9995 if byte_fallback else 1.0
    check_output_prefix(model_prefix)  # before training: that can take a while
    model_prefix = Path(model_prefix)
    if model_prefix.suffix == ".model":  # "tok.model" given: mean "tok", not "tok.model.model"
        model_prefix = model_prefix.with_suffix("")
    model_path = model_prefix.with_name(model_prefix.name + ".model")
    names = ", ".join(str(p) for p in inputs)

    count = [0]
    failure: list[BaseException] = []

    def sentences() -> Iterator[str]:
        # sentencepiece turns exceptions raised inside the iterator into an opaque
        # RuntimeError: keep ours (e.g. "file.jsonl:7: not valid JSON") and re-raise it.
        try:
            yield from _sentences(inputs, json_key, max_sentence_length, count)
        except BaseException as err:
            failure.append(err)
            raise

    model = _BytesWriter()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=sentences(), model_writer=model,
            vocab_size=vocab_size, model_type=model_type, byte_fallback=byte_fallback,
            character_coverage=character_coverage,
            unk_id=0, eos_id=1, bos_id=-1, pad_id=-1, user_defined_symbols=["\n"],
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, allow_whitespace_only_pieces=True,
            input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
            max_sentence_length=max_sentence_length, num_threads=num_threads,
            minloglevel=0 if verbose else 2,
        )
    except RuntimeError as err:
        if failure:
            raise failure[0] from None
        if count[0] == 0:
            raise DataError(f"no text to train a tokenizer on: every document in {names} is "
                            "empty") from None
        message = str(err).strip().split("] ")[-1]
        raise DataError(f"sentencepiece could not train a {model_type} tokenizer with "
                        f"vocab_size={vocab_size} on {names} ({count[0]} sentences): "
                        f"{message}") from None
    model_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(model_path, model.data)
    processor = spm.SentencePieceProcessor(model_proto=model.data)
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
                    for i in range(processor.get_piece_size()))
    write_atomically(model_path.with_suffix(".vocab"), vocab)
    return model_path


class _BytesWriter:
    """The `model_writer` sentencepiece writes the serialized model to."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

