"""The sentencepiece tokenizer: exact round trips, reproducible training, clear errors."""

from __future__ import annotations

import json

import pytest
from datafiles import VOCAB, corpus, texts

from megatron_ponder.config import ConfigError
from megatron_ponder.data.errors import DataError
from megatron_ponder.data.tokenizer import Tokenizer, check_fits, train_tokenizer

ASCII = ("The quick brown fox jumps over the lazy dog.\n\n  def f(x):\n\treturn x ** 2  # 42\n"
         "Multiple   spaces,   trailing space \nand a final line")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_round_trip_and_exact_vocab_size(data, tmp_path, model_type):
    tok = Tokenizer.load(train_tokenizer([data], tmp_path / "t", VOCAB, model_type))
    assert tok.vocab_size == VOCAB
    assert tok.eod_id == 1 and tok.path == tmp_path / "t.model"
    for text in [ASCII, *texts(data)[:5], "naïve café ✓ 日本"]:  # non-ASCII: byte fallback
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(ASCII)
    assert all(0 <= i < VOCAB for i in ids) and tok.eod_id not in ids
    # merges were learnt: 256 of the 400 pieces are bytes, yet prose takes > 1.3 characters
    # per token (about 1.5 measured; byte-level tokenisation would give 1.0)
    prose = " ".join(texts(data)[:3])
    assert len(prose) / len(tok.encode(prose)) > 1.3


def test_training_is_deterministic(data, tmp_path):
    a = train_tokenizer([data], tmp_path / "a", VOCAB)
    b = train_tokenizer([data], tmp_path / "b", VOCAB)
    assert a.read_bytes() == b.read_bytes()
    c = train_tokenizer([data], tmp_path / "c", VOCAB + 64)
    assert Tokenizer.load(c).vocab_size == VOCAB + 64


def test_text_and_jsonl_inputs_train_the_same_model(data, tmp_path):
    """Training reads the non-blank lines of the documents: the JSONL corpus and the same
    documents as blank-line separated text give the same model."""
    text = tmp_path / "c.txt"
    text.write_text("\n\n".join(texts(data)) + "\n")
    a = train_tokenizer([data], tmp_path / "a", VOCAB)
    b = train_tokenizer([text], tmp_path / "b", VOCAB)
    assert a.read_bytes() == b.read_bytes()


def test_training_errors_name_the_problem(data, tmp_path):
    with pytest.raises(DataError, match=r"input file .*missing\.txt does not exist"):
        train_tokenizer([tmp_path / "missing.txt"], tmp_path / "t", VOCAB)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine line"}) + "\n" + '{"text": "broken\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        train_tokenizer([bad], tmp_path / "t", VOCAB)
    with pytest.raises(DataError, match=r"Vocabulary size too high \(60000\)"):
        train_tokenizer([data], tmp_path / "t", 60000)
    with pytest.raises(DataError, match=r"vocab_size=100 is too small: must be >= 259"):
        train_tokenizer([data], tmp_path / "t", 100)
    assert not list(tmp_path.glob("t.*"))  # nothing written by a failed training


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"tokenizer .*nope\.model does not exist: expected a "
                                        r"sentencepiece \.model"):
        Tokenizer.load(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(DataError, match=r"junk\.model is not a sentencepiece model"):
        Tokenizer.load(junk)


def test_check_fits(data, tmp_path):
    tok = Tokenizer.load(train_tokenizer([data], tmp_path / "t", VOCAB))
    check_fits(tok, VOCAB)
    check_fits(tok, 512)
    with pytest.raises(ConfigError) as err:
        check_fits(tok, VOCAB - 1)
    message = str(err.value)
    assert "data.tokenizer=" in message and str(tok.path) in message
    assert f"vocabulary of {VOCAB} tokens" in message
    assert f"model.vocab_size={VOCAB - 1}" in message and "(e.g. 512" in message
