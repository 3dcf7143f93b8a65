"""Hugging Face tokenizers through the one `Tokenizer` interface: a byte-level BPE trained in
the test, its ids, end-of-document token, dtype and files; errors name the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datafiles import corpus, texts

from megatron_ponder.data.errors import DataError
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.data.tokenizer_training import train_bpe_tokenizer, train_tokenizer

BPE_VOCAB = 600
EOS = "<|endoftext|>"
SAMPLES = ["The quick brown fox jumps over the lazy dog.\n\n  def f(x):\n\treturn x ** 2  # 4\n",
           "Multiple   spaces,   trailing space \nand a final line", "naïve café ✓ 日本 🙂", ""]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("hf_tok"))


@pytest.fixture(scope="module")
def bpe(data, tmp_path_factory) -> Tokenizer:
    return Tokenizer.load(train_bpe_tokenizer([data], tmp_path_factory.mktemp("bpe") / "tok",
                                              BPE_VOCAB))


def test_bpe_training_is_deterministic_and_names_its_eos(data, bpe, tmp_path):
    again = train_bpe_tokenizer([data], tmp_path / "again", BPE_VOCAB)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (bpe.path / name).read_bytes()
    assert bpe.kind == "huggingface" and bpe.vocab_size == BPE_VOCAB  # the corpus has merges
    assert bpe.eod_id == 0 and bpe.piece(0) == EOS and bpe.is_special(0)
    assert json.loads((bpe.path / "tokenizer_config.json").read_text())["eos_token"] == EOS
    assert bpe.token_dtype is np.uint16
    assert bpe.files() == [bpe.path / "tokenizer.json", bpe.path / "tokenizer_config.json"]


def test_round_trip_and_batch_equals_single(data, bpe):
    docs = texts(data)
    for text in SAMPLES + docs[:20]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text and bpe.eod_id not in ids
    # encode_batch (the tokenizers backend) and encode (megatron's tokenize) agree exactly.
    assert bpe.encode_batch(docs) == [bpe.encode(d) for d in docs]
    # merges were learnt: prose takes > 2 characters per token (2.4 measured; bytes: 1.0)
    prose = " ".join(docs[:5])
    assert len(prose) / len(bpe.encode(prose)) > 2.0


def test_file_and_folder_load_the_same_tokenizer(bpe):
    by_file = Tokenizer.load(bpe.path / "tokenizer.json")
    assert by_file.eod_id == bpe.eod_id and by_file.vocab_size == bpe.vocab_size
    assert [by_file.encode(t) for t in SAMPLES] == [bpe.encode(t) for t in SAMPLES]


def test_pieces_texts_and_specials(bpe):
    the = bpe.encode(" the")
    assert len(the) == 1 and bpe.piece(the[0]) == "Ġthe" and bpe.token_text(the[0]) == " the"
    assert bpe.token_text(0) == EOS and bpe.decode([0]) == ""  # specials have no text
    assert sum(bpe.is_special(i) for i in range(bpe.vocab_size)) == 1


def test_eod_token_names_another_token(bpe, data, tmp_path):
    newline = bpe.encode("\n")[0]  # a vocabulary entry, as tokenizer.json spells it: "Ċ"
    assert Tokenizer.load(bpe.path, eod_token="\u010a").eod_id == newline
    with pytest.raises(DataError, match=r"data.eod_token='<eod>' is not a token of .*tokenizer"
                                        r"\.json; its special tokens: \['<\|endoftext\|>'\]"):
        Tokenizer.load(bpe.path, eod_token="<eod>")
    sp = Tokenizer.load(train_tokenizer([data], tmp_path / "sp", 400))
    assert sp.kind == "sentencepiece" and sp.eod_id == 1 and sp.files() == [sp.path]
    assert Tokenizer.load(sp.path, eod_token="<unk>").eod_id == 0
    with pytest.raises(DataError, match=r"data.eod_token='<eod>' is not a piece of tokenizer "
                                        r".*sp\.model; its control pieces: \['<unk>', '</s>'\]"):
        Tokenizer.load(sp.path, eod_token="<eod>")


def test_the_token_dtype_follows_the_vocabulary(tmp_path):
    """70000 ids do not fit uint16: megatron's indexed dataset then stores int32."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    from megatron_ponder.data.indexed import preprocess

    words = {f"w{i}": i for i in range(70_000)}
    backend = Backend(models.WordLevel(vocab=words, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path / "wide"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    tok = Tokenizer.load(folder, eod_token="w1")
    assert tok.vocab_size == 70_000 and tok.token_dtype is np.int32
    assert tok.encode("w69999 w5") == [69_999, 5]
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"text": "w69999 w5"}) + "\n")
    preprocess([source], tok, tmp_path / "out", progress=False)
    tokens = np.fromfile(tmp_path / "out.bin", dtype=np.int32)
    assert tokens.tolist() == [69_999, 5, 1]


def test_load_errors_name_the_file_and_what_is_valid(bpe, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"tokenizer folder .*empty has no tokenizer\.json: "
                                        r"expected a sentencepiece \.model file, or a Hugging "
                                        r"Face tokenizer folder holding tokenizer\.json"):
        Tokenizer.load(empty)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tokenizer.json").write_text((bpe.path / "tokenizer.json").read_text()[:500])
    with pytest.raises(DataError, match=r"tokenizer file .*corrupt/tokenizer\.json is corrupt: "
                                        r"not valid JSON"):
        Tokenizer.load(corrupt)
    (corrupt / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    with pytest.raises(DataError, match=r"tokenizer file .*corrupt/tokenizer\.json could not be "
                                        r"loaded by transformers"):
        Tokenizer.load(corrupt)
    other = tmp_path / "vocab.json"
    other.write_text("{}")
    with pytest.raises(DataError, match=r"vocab\.json is a \.json file but not named "
                                        r"tokenizer\.json"):
        Tokenizer.load(other)


def test_bpe_training_errors_name_the_problem(data, tmp_path):
    with pytest.raises(DataError, match=r"vocab_size=100 is too small: a byte-level BPE must be "
                                        r">= 257"):
        train_bpe_tokenizer([data], tmp_path / "t", 100)
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(DataError, match=r"no text to train a tokenizer on: every document in "
                                        r".*blank\.jsonl is empty"):
        train_bpe_tokenizer([blank], tmp_path / "t", 300)
    (tmp_path / "file").write_text("taken")
    with pytest.raises(DataError, match=r"output .*file is a file: a Hugging Face tokenizer is "
                                        r"a folder"):
        train_bpe_tokenizer([data], tmp_path / "file", 300)
    assert not (tmp_path / "t").exists()  # nothing written by a failed training
