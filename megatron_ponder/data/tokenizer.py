"""One tokenizer interface for every tool that reads or writes tokens.

`Tokenizer.load(path, eod_token="")` takes either

* a sentencepiece ``.model`` (tools/train_tokenizer.py trains one; see tokenizer_training.py), or
* a Hugging Face tokenizer: a folder with ``tokenizer.json`` (as `save_pretrained` writes it,
  usually with ``tokenizer_config.json`` naming ``eos_token``), or that ``tokenizer.json`` file
  (then its folder is read, so a ``tokenizer_config.json`` beside it counts);

and loads both through megatron-core's tokenizer library (`MegatronTokenizer.from_pretrained`
with library "sentencepiece" / "huggingface"): loading, the vocabulary size, the EOS id,
single-text encoding and decoding are megatron's. What it cannot do, and so is done on the
tokenizer object megatron holds (`_tokenizer.tokenizer`: the SentencePieceProcessor, or the
transformers tokenizer whose `_tokenizer` is the `tokenizers` backend):

* batch encoding: megatron's `tokenize` takes one text and goes through token strings.
  For a byte-level BPE ``tokenizer.json`` the backend's `encode_batch_fast` is 1.2-3.1x
  faster on one thread (0.32 MB of documents, TOKENIZERS_PARALLELISM=false, a shared and
  loaded 2-core machine: 1.0-4.1 s against 2.1-4.9 s) and can use several threads;
  sentencepiece's batch encode runs `num_threads` threads. tests/data/test_tokenizer_hf.py
  checks that both paths give the same ids;
* the vocabulary entry of an id and whether it is special (`piece`, `is_special`), and the
  files a Hugging Face export ships (`files`).

The end-of-document id (appended to every document, the separator GPTDataset and generation
see) is the tokenizer's EOS unless the recipe names a token (`data.eod_token`); a tokenizer
without EOS and no `data.eod_token` is an error that lists its special tokens. The vocabulary
size and the token dtype of the indexed dataset (megatron's `DType.optimal_dtype`: uint16
below 65500 ids, else int32) follow the tokenizer.

Threads: sentencepiece encodes a batch with `num_threads` threads; the Hugging Face backend
uses its own rayon pool (RAYON_NUM_THREADS; TOKENIZERS_PARALLELISM=false turns it off, which
worker processes should do so that N workers use N cores).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from megatron_ponder.config import ConfigError
from megatron_ponder.data.errors import DataError

KINDS = ("sentencepiece", "huggingface")
HF_FILE = "tokenizer.json"
# What transformers' AutoTokenizer reads from a tokenizer folder: an export ships those present.
HF_TOKENIZER_FILES = (HF_FILE, "tokenizer_config.json", "special_tokens_map.json",
                      "added_tokens.json", "chat_template.jinja", "chat_template.json",
                      "vocab.json", "merges.txt", "tokenizer.model")
HOW_TO_TRAIN = "train one with tools/train_tokenizer.py"
VALID = ("expected a sentencepiece .model file, or a Hugging Face tokenizer folder holding "
         f"{HF_FILE} (or that file)")


def piece_text(piece: str) -> str:
    """A sentencepiece piece as text: '▁' is a space, <0xNN> the byte's character."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        value = int(piece[3:5], 16)
        return chr(value) if value < 128 else "\ufffd"
    return piece.replace("\u2581", " ")


class Tokenizer:
    """A loaded tokenizer of either kind. Build with `Tokenizer.load(path, eod_token)`."""

    def __init__(self, megatron_tokenizer, path: Path, kind: str, eod_id: int):
        self._mt = megatron_tokenizer
        # The library object under megatron's wrapper (see the module docstring for why).
        self._lib = megatron_tokenizer._tokenizer.tokenizer
        self._backend = self._lib._tokenizer if kind == "huggingface" else None
        self.path = Path(path)
        self.kind = kind
        self._eod_id = eod_id
        self._special: set[int] | None = None

    @classmethod
    def load(cls, path: str | Path, eod_token: str = "") -> "Tokenizer":
        """DataError (exit 2 in the tools) for a missing, unreadable or EOS-less tokenizer."""
        path = Path(path)
        if not str(path) or str(path) == ".":
            raise DataError(f"no tokenizer given (data.tokenizer is empty): {VALID}; "
                            f"{HOW_TO_TRAIN}")
        if not path.exists():
            raise DataError(f"tokenizer {path} does not exist: {VALID}; {HOW_TO_TRAIN}")
        if path.is_dir() or path.suffix == ".json":
            return _load_huggingface(path, eod_token)
        return _load_sentencepiece(path, eod_token)

    @property
    def vocab_size(self) -> int:
        return self._mt.vocab_size

    @property
    def eod_id(self) -> int:
        """The end-of-document id, appended to every document."""
        return self._eod_id

    @property
    def token_dtype(self) -> type:
        """The dtype of this tokenizer's ids in an indexed dataset (megatron's choice)."""
        # defer: megatron.core (seconds to import), only when the dtype is asked
        from megatron.core.datasets.indexed_dataset import DType

        return DType.optimal_dtype(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return list(self._mt.tokenize(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Encode many texts at once (sentencepiece: `num_threads` threads; Hugging Face:
        the backend's thread pool)."""
        if self._backend is None:
            return self._lib.encode(list(texts), num_threads=num_threads)
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special tokens (the end-of-document one too) have none."""
        return self._mt.detokenize([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        """The vocabulary entry ('\u2581the', '<0x0A>', 'Ġthe', '</s>'), not its text."""
        if self._backend is None:
            return self._lib.id_to_piece(int(token_id))
        return self._backend.id_to_token(int(token_id))

    def token_text(self, token_id: int) -> str:
        """The text one token stands for, leading space included ('▁the', 'Ġthe': ' the')."""
        if self._backend is None:
            return piece_text(self.piece(token_id))
        return self._backend.decode([int(token_id)], skip_special_tokens=False)

    def is_special(self, token_id: int) -> bool:
        """End-of-document, unknown and other control tokens (no text of their own)."""
        if self._backend is None:
            return self._lib.is_control(int(token_id)) or self._lib.is_unknown(int(token_id))
        if self._special is None:
            added = self._backend.get_added_tokens_decoder()
            self._special = ({i for i, t in added.items() if t.special}
                             | set(self._lib.all_special_ids) | {self._eod_id})
        return int(token_id) in self._special

    @property
    def in_hf_folder(self) -> bool:
        """Whether transformers' files come with it: a tokenizer.json, or a sentencepiece
        tokenizer.model beside a tokenizer_config.json (a Llama 2 folder without
        tokenizer.json), whose BOS/EOS settings an export must keep rather than re-derive."""
        return self._backend is not None or (
            self.path.name == "tokenizer.model"
            and (self.path.parent / "tokenizer_config.json").is_file())

    def files(self) -> list[Path]:
        """The files that make up this tokenizer (what an export copies unchanged)."""
        if not self.in_hf_folder:
            return [self.path]
        folder = _hf_folder(self.path)
        return [folder / name for name in HF_TOKENIZER_FILES if (folder / name).is_file()]

    def __repr__(self) -> str:
        return (f"Tokenizer({str(self.path)!r}, {self.kind}, vocab_size={self.vocab_size}, "
                f"eod_id={self.eod_id})")


def _hf_folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _from_megatron(path: Path, library: str, **kwargs):
    # defer: megatron.core (seconds to import), only when a tokenizer is loaded
    from megatron.core.tokenizers import MegatronTokenizer

    with warnings.catch_warnings():  # megatron.core's import: no Apex / Transformer Engine
        warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
        return MegatronTokenizer.from_pretrained(
            str(path), metadata_path={"library": library, "model_type": "gpt"}, **kwargs)


def _load_sentencepiece(path: Path, eod_token: str) -> Tokenizer:
    try:
        mt = _from_megatron(path, "sentencepiece")
    except (RuntimeError, OSError, ValueError) as err:
        raise DataError(f"tokenizer model {path} is not a sentencepiece model "
                        f"({str(err).strip()}): {VALID}; {HOW_TO_TRAIN}") from None
    sp = mt._tokenizer.tokenizer
    if eod_token:
        eod = sp.piece_to_id(eod_token)
        if sp.id_to_piece(eod) != eod_token:  # sentencepiece maps unknown pieces to <unk>
            specials = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                        if sp.is_control(i) or sp.is_unknown(i)]
            raise DataError(f"data.eod_token={eod_token!r} is not a piece of tokenizer {path}; "
                            f"its control pieces: {specials}")
    else:
        eod = sp.eos_id()
        if eod < 0:
            raise DataError(f"tokenizer model {path} has no end-of-document token (</s> is "
                            f"disabled, eos_id=-1): set data.eod_token to one of its pieces, or "
                            f"{HOW_TO_TRAIN}, which sets it")
    return Tokenizer(mt, path, "sentencepiece", eod)


def _load_huggingface(path: Path, eod_token: str) -> Tokenizer:
    folder = _hf_folder(path)
    file = folder / HF_FILE
    if path.is_file() and path.name != HF_FILE:
        raise DataError(f"tokenizer {path} is a .json file but not named {HF_FILE}: "
                        f"{VALID}; Hugging Face reads a tokenizer from {HF_FILE} in its folder")
    if not file.is_file():
        hint = (f"; its tokenizer.model looks like a sentencepiece model: give that file"
                if (folder / "tokenizer.model").is_file() else "")
        raise DataError(f"tokenizer folder {folder} has no {HF_FILE}: {VALID}{hint}")
    try:
        json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"tokenizer file {file} is corrupt: not valid JSON ({err}); {VALID}, "
                        "e.g. as tokenizers' Tokenizer.save or save_pretrained writes it") from None
    try:
        mt = _from_megatron(folder, "huggingface", use_fast=True)
    except (ValueError, OSError, TypeError) as err:
        raise DataError(f"tokenizer file {file} could not be loaded by transformers: "
                        f"{str(err).strip()}; {VALID}") from None
    hf = mt._tokenizer.tokenizer
    specials = sorted({t.content for t in hf._tokenizer.get_added_tokens_decoder().values()})
    if eod_token:
        eod = hf._tokenizer.token_to_id(eod_token)
        if eod is None:
            raise DataError(f"data.eod_token={eod_token!r} is not a token of {file}; its "
                            f"special tokens: {specials}")
    else:
        eod = mt.eod
        if eod is None:
            raise DataError(
                f"tokenizer {folder} names no end-of-document token (no eos_token in "
                f"{folder / 'tokenizer_config.json'}): set data.eod_token (preprocess_data.py: "
                f"--eod-token) to one of its special tokens {specials}, or add eos_token to "
                "tokenizer_config.json")
    return Tokenizer(mt, path, "huggingface", int(eod))


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


# Training lives in tokenizer_training.py; callers of the sentencepiece trainer import it here too.
from megatron_ponder.data.tokenizer_training import train_tokenizer  # noqa: E402,F401
