"""import-hf and the checkpoint folder's own tokenizer (issue 23): the folder's tokenizer.json
beats the recipe's data.tokenizer (the embeddings index its ids); one the embedding cannot hold,
or no tokenizer anywhere, is refused at import (exit 2 naming the field, nothing written), not
at the first training step."""

import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "tools")]
import convert_checkpoint as convert_tool  # noqa: E402
import train_tokenizer as train_tool  # noqa: E402
from stock_models import save_stock  # noqa: E402

# Names runs/data/tinyshakespeare's sentencepiece model, not the folder's tokenizer.
RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    """A 512-id byte-level BPE tokenizer folder (tokenizer.json, tokenizer_config.json)."""
    from megatron_ponder.data.corpus import write_default_corpus

    root = tmp_path_factory.mktemp("bpe")
    corpus = write_default_corpus(root / "corpus.jsonl", max_bytes=60_000, quiet=True)
    assert train_tool.main(["--kind", "hf-bpe", "--input", str(corpus), "--output-prefix",
                            str(root / "tok"), "--vocab-size", "512"]) == 0
    return root / "tok"


def stock_with_tokenizer(folder: Path, tokenizer: Path | None, **config) -> Path:
    save_stock(folder, "llama3", **config)
    for file in tokenizer.iterdir() if tokenizer else ():
        shutil.copyfile(file, folder / file.name)
    return folder


def test_the_folders_tokenizer_beats_the_recipes(tmp_path, bpe, capsys):
    from megatron_ponder.config import load_config

    folder = stock_with_tokenizer(tmp_path / "hf", bpe)
    run = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE,
                              "--method", "vanilla", "--k", "0"]) == 0
    assert load_config(run / "config.yaml").data.tokenizer == str(folder.resolve())
    assert "data.tokenizer: recipe 'runs/data/tinyshakespeare/tokenizer.model'" in capsys.readouterr().out
    # ... and a command-line data.tokenizer still wins (training on another tokenizer on purpose).
    other = tmp_path / "other"
    assert convert_tool.main(["import-hf", str(folder), str(other), "--recipe", RECIPE,
                              "--method", "vanilla", "--k", "0", f"data.tokenizer={bpe}"]) == 0
    assert load_config(other / "config.yaml").data.tokenizer == str(bpe)


def test_a_tokenizer_the_embedding_cannot_hold_is_refused_at_import(tmp_path, bpe, capsys):
    folder = stock_with_tokenizer(tmp_path / "hf", bpe, vocab_size=256)
    run = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE,
                              "--method", "ponderlm3"]) == 2
    err = capsys.readouterr().err
    assert "vocabulary of 512 tokens but model.vocab_size=256" in err, err
    assert not run.exists()


def test_no_tokenizer_anywhere_names_data_tokenizer(tmp_path, capsys):
    recipe = yaml.safe_load(Path(RECIPE).read_text())
    del recipe["data"]["tokenizer"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    folder = stock_with_tokenizer(tmp_path / "hf", None)
    run = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(run), "--recipe",
                              str(tmp_path / "recipe.yaml"), "--method", "vanilla", "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert "data.tokenizer is empty" in err and "ships no tokenizer" in err, err
    assert not run.exists()


def test_a_sentencepiece_folders_tokenizer_is_exported_unchanged(tmp_path, tiny_data):
    """A Llama 2 folder without tokenizer.json: its tokenizer.model and tokenizer_config.json
    reach the export byte for byte. Re-converting the .model (as for a bare one) would reset
    its special-token settings (add_bos_token=false here) to the converter's (BOS </s> first)."""
    import json

    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO / "tools"))
    import export_hf as export_tool

    from megatron_ponder.data.tokenizer import Tokenizer

    folder = tmp_path / "hf"
    save_stock(folder, "llama")
    shutil.copyfile(tiny_data["tokenizer"], folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "eos_token": "</s>", "unk_token": "<unk>",
        "bos_token": None, "add_bos_token": False, "add_eos_token": False}))
    run = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE,
                              "--method", "vanilla", "--k", "0"]) == 0
    assert export_tool.main([str(run), str(tmp_path / "export")]) == 0
    for name in ("tokenizer.model", "tokenizer_config.json"):
        assert (tmp_path / "export" / name).read_bytes() == (folder / name).read_bytes(), name
    text = "The river flows past the old mill."
    ids = AutoTokenizer.from_pretrained(tmp_path / "export")(text).input_ids
    assert ids == Tokenizer.load(folder / "tokenizer.model").encode(text), ids
