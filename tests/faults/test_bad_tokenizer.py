"""A bad tokenizer: a folder without tokenizer.json, a corrupt tokenizer.json, a tokenizer
without an end-of-document token and no data.eod_token, a data.eod_token it lacks. The tools
exit 2 naming the file and what would be valid; nothing already written changes."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from filesystems import tree_digest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import preprocess_data as preprocess_tool  # noqa: E402

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory) -> Path:
    """A byte-level BPE folder (tokenizer.json + tokenizer_config.json naming EOS)."""
    from megatron_ponder.data.tokenizer_training import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("bad_tok")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i}: the river and the mill"}) + "\n"
                              for i in range(50)))
    return train_bpe_tokenizer([corpus], root / "tok", 300)


@pytest.fixture
def written(tmp_path):
    """An existing PREFIX.bin/.idx pair a failed preprocessing must leave as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.bin").write_bytes(b"tokens written before")
    (out / "c.idx").write_bytes(b"index written before")
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"text": "the river"}) + "\n")
    return corpus, out, tree_digest(out)


def preprocess(corpus, tokenizer, out, *extra):
    return preprocess_tool.main(["--input", str(corpus), "--tokenizer", str(tokenizer),
                                 "--output-prefix", str(out / "c"), "--no-progress", *extra])


def test_a_folder_without_tokenizer_json(written, tmp_path, capsys):
    corpus, out, digest = written
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert preprocess(corpus, folder, out) == 2
    assert (f"tokenizer folder {folder} has no tokenizer.json: expected a sentencepiece .model "
            f"file, or a Hugging Face tokenizer folder holding tokenizer.json"
            in capsys.readouterr().err)
    assert tree_digest(out) == digest


def test_a_corrupt_tokenizer_json(bpe_folder, written, tmp_path, capsys):
    corpus, out, digest = written
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((bpe_folder / "tokenizer.json").read_bytes()[:777])
    assert preprocess(corpus, folder, out) == 2
    err = capsys.readouterr().err
    assert f"tokenizer file {folder / 'tokenizer.json'} is corrupt: not valid JSON" in err
    assert "Traceback" not in err
    # the file given directly is reported the same way
    assert preprocess(corpus, folder / "tokenizer.json", out) == 2
    assert f"{folder / 'tokenizer.json'} is corrupt" in capsys.readouterr().err
    assert tree_digest(out) == digest


def test_a_tokenizer_without_eos(bpe_folder, written, tmp_path, capsys):
    """A bare tokenizer.json (no tokenizer_config.json naming eos_token): exit 2 listing its
    special tokens; --eod-token (data.eod_token) names one and then it works."""
    corpus, out, digest = written
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(bpe_folder / "tokenizer.json", bare / "tokenizer.json")
    assert preprocess(corpus, bare, out) == 2
    assert (f"tokenizer {bare} names no end-of-document token (no eos_token in "
            f"{bare / 'tokenizer_config.json'}): set data.eod_token (preprocess_data.py: "
            f"--eod-token) to one of its special tokens ['{EOS}']" in capsys.readouterr().err)
    assert tree_digest(out) == digest
    assert preprocess(corpus, bare, out, "--eod-token", "<eod>") == 2
    assert f"data.eod_token='<eod>' is not a token of {bare / 'tokenizer.json'}" \
        in capsys.readouterr().err
    assert tree_digest(out) == digest
    assert preprocess(corpus, bare / "tokenizer.json", out, "--eod-token", EOS) == 0
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    data = IndexedDataset(str(out / "c"))  # held: its arrays view the dataset's mmap
    assert data[0][-1] == 0  # EOS is id 0 of the trained BPE


def test_training_refuses_an_eos_less_tokenizer_or_a_foreign_eod_token(
        bpe_folder, train_cli, tiny_recipe, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(bpe_folder / "tokenizer.json", bare / "tokenizer.json")
    recipe = tiny_recipe(tmp_path / "r.yaml", tmp_path / "run")
    result = train_cli(recipe, f"data.tokenizer={bare}")
    assert result.returncode == 2
    assert f"tokenizer {bare} names no end-of-document token" in result.stderr
    assert "set data.eod_token" in result.stderr
    result = train_cli(recipe, "data.eod_token=<eod>")  # the recipe's sentencepiece model
    assert result.returncode == 2
    assert "data.eod_token='<eod>' is not a piece of tokenizer" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
