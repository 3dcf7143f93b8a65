"""Training tokenizers: a sentencepiece model (`train_tokenizer`) or a Hugging Face byte-level
BPE `tokenizer.json` (`train_bpe_tokenizer`); both read the formats of documents.py.

sentencepiece: a trained model is a faithful, reproducible text codec:

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

Hugging Face byte-level BPE (GPT-2 / Llama 3 / Qwen style): the GPT-2 pre-tokenizer splits
words, spaces, digits and punctuation; the 256 byte symbols are all in the vocabulary, so any
text encodes without <unk> and `decode(encode(text)) == text`; the EOS token (default
"<|endoftext|>", id 0) is the only special token and `tokenizer_config.json` names it, so
`Tokenizer.load` and `AutoTokenizer` both find the end-of-document id. Documents are fed
whole, in input order; training is deterministic (same inputs, same bytes: tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from megatron_ponder.data.documents import check_inputs, iter_documents
from megatron_ponder.data.errors import DataError
from megatron_ponder.run.layout import check_output_prefix, check_writable_dir, write_atomically

MODEL_TYPES = ("bpe", "unigram")
DEFAULT_EOS = "<|endoftext|>"


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



def train_bpe_tokenizer(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    vocab_size: int,
    *,
    json_key: str = "text",
    eos_token: str = DEFAULT_EOS,
    min_frequency: int = 2,
) -> Path:
    """Train a byte-level BPE on text/JSONL files; write OUTPUT_DIR/tokenizer.json and
    tokenizer_config.json (naming `eos_token`), each atomically. Returns OUTPUT_DIR, which
    `Tokenizer.load` and transformers' `AutoTokenizer.from_pretrained` both read."""
    # defer: the tokenizers library, only when training a BPE
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    inputs = check_inputs(inputs)
    minimum = 256 + 1
    if vocab_size < minimum:
        raise DataError(f"vocab_size={vocab_size} is too small: a byte-level BPE must be >= "
                        f"{minimum} (256 byte symbols + {eos_token})")
    if not eos_token:
        raise DataError("eos_token is empty: the end-of-document token needs a name such as "
                        f"{DEFAULT_EOS!r}")
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise DataError(f"output {output_dir} is a file: a Hugging Face tokenizer is a folder "
                        "(holding tokenizer.json); give a directory path")
    check_writable_dir(output_dir, "output folder")  # before training: that can take a while

    count = [0]

    def documents() -> Iterator[str]:
        for text in iter_documents(inputs, json_key):
            if text.strip():
                count[0] += 1
                yield text

    tokenizer = BackendTokenizer(models.BPE())
    # GPT-2's byte-level scheme: bytes mapped to printable symbols, no prefix space, so a
    # document's first word and a mid-line word differ only by their "Ġ" (space) symbol.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(documents(), trainer)
    if count[0] == 0:
        names = ", ".join(str(p) for p in inputs)
        raise DataError(f"no text to train a tokenizer on: every document in {names} is empty")
    config = {
        # PreTrainedTokenizerFast: a class every transformers version loads from tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos_token,
        "clean_up_tokenization_spaces": False,  # decode must give back the text, spaces too
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,  # transformers' "none"
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / "tokenizer.json", tokenizer.to_str(pretty=True) + "\n")
    write_atomically(output_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    return output_dir
