"""A Hugging Face byte-level BPE tokenizer end to end, through the command-line tools: trained
(train_tokenizer.py --kind hf-bpe), the corpus tokenised with it (preprocess_data.py), a
short training run, eval_ppl and generate on that run, and an export that ships the
tokenizer's files unchanged, so AutoTokenizer gives exactly the ids training used."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_ponder.data.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import eval_ppl as eval_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402
import generate as generate_tool  # noqa: E402
import ponder_analysis as analysis_tool  # noqa: E402
import preprocess_data as preprocess_tool  # noqa: E402
import show_ponder as show_tool  # noqa: E402
import train_tokenizer as train_tool  # noqa: E402

VOCAB = 512  # the tiny run's model.vocab_size
STEPS = 20
SAMPLES = ["The river flows past the old mill.", "Numbers 1984 and 2.5%", "Ünïcødé ok",
           "Line one\nLine two", "  indented  code:\treturn x"]


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """(tokenizer, corpus documents, run directory) after a 6-step run on BPE-tokenised data."""
    from megatron_ponder.config import config_from_dict
    from megatron_ponder.data.corpus import write_default_corpus
    from megatron_ponder.run.exit_codes import EXIT_DONE
    from megatron_ponder.training.trainer import Trainer
    from tiny_runs import run_dict

    root = tmp_path_factory.mktemp("hf_run")
    corpus = write_default_corpus(root / "corpus.jsonl", max_bytes=150_000, quiet=True)
    assert train_tool.main(["--kind", "hf-bpe", "--input", str(corpus), "--output-prefix",
                            str(root / "tok"), "--vocab-size", str(VOCAB)]) == 0
    assert preprocess_tool.main(["--input", str(corpus), "--tokenizer", str(root / "tok"),
                                 "--output-prefix", str(root / "data"), "--no-progress"]) == 0
    run = root / "run"
    cfg = run_dict({"tokenizer": str(root / "tok"), "prefix": str(root / "data")}, run,
                   steps=STEPS, save_interval=STEPS, lr=1e-2, warmup_fraction=0.1)
    assert Trainer(config_from_dict(cfg)).train() == EXIT_DONE
    docs = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    return Tokenizer.load(root / "tok"), docs, run


def test_the_data_holds_the_tokenizers_ids(hf_run):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tok, docs, run = hf_run
    assert tok.kind == "huggingface" and tok.vocab_size == VOCAB and tok.eod_id == 0
    data = IndexedDataset(str(Path(run).parent / "data"))
    assert data.index.dtype is np.uint16 and len(data) == sum(bool(d.strip()) for d in docs)
    first = [d for d in docs if d.strip()][:3]
    for i, doc in enumerate(first):
        assert data[i].tolist() == tok.encode(doc) + [tok.eod_id]


def test_training_on_bpe_tokens_learns(hf_run):
    from tiny_runs import read_metrics

    _, _, run = hf_run
    losses = [r["loss"] for _, r in sorted(read_metrics(run).items())]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    # starts near uniform over the 512 ids (ln 512 = 6.24; the tiny init is close to uniform);
    # the last five steps average 0.7 below the first five (measured 6.35 -> 5.64).
    assert abs(losses[0] - math.log(VOCAB)) < 0.3
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


def test_eval_ppl_and_generate_use_the_bpe_tokenizer(hf_run, tmp_path, capsys):
    from megatron_ponder.inference.decoding import generate
    from megatron_ponder.inference.model_loading import load_model

    tok, _, run = hf_run
    out = tmp_path / "ppl.json"
    assert eval_tool.main([str(run), "--samples", "4", "--batch-size", "2",
                           "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(0 < r["loss"] < math.log(VOCAB) + 0.3 for r in rows)
    capsys.readouterr()
    prompts = ["The river", "In the"]
    assert generate_tool.main([str(run), *(a for p in prompts for a in ("--prompt", p)),
                               "--max-new-tokens", "4", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, _ = load_model(run)
    expected = generate(model, [[tok.eod_id] + tok.encode(p) for p in prompts], 4)
    assert [r["token_ids"] for r in rows] == expected.tokens
    assert [r["completion"] for r in rows] == [tok.decode(ids) for ids in expected.tokens]


def test_the_export_ships_the_tokenizer_unchanged(hf_run, tmp_path):
    from transformers import AutoTokenizer

    tok, docs, run = hf_run
    out = tmp_path / "hf"
    assert export_tool.main([str(run), str(out)]) == 0
    for file in tok.files():  # tokenizer.json and tokenizer_config.json, byte for byte
        assert (out / file.name).read_bytes() == file.read_bytes()
    assert not (out / "tokenizer.model").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["eos_token_id"] == tok.eod_id == 0
    hf = AutoTokenizer.from_pretrained(out)
    assert hf.eos_token_id == tok.eod_id and len(hf) == tok.vocab_size
    for text in SAMPLES + docs[:10]:
        assert hf(text).input_ids == tok.encode(text)
        assert hf.decode(hf(text).input_ids) == text


def test_show_ponder_and_ponder_analysis_read_bpe_tokens(hf_run, tmp_path):
    tok, _, run = hf_run
    text = "The river flows past the old mill."
    assert show_tool.main([str(run), "--text", text, "--output", str(tmp_path / "view")]) == 0
    page = (tmp_path / "view.html").read_text()
    assert page.count('<span title="') == len(tok.encode(text))
    out = tmp_path / "analysis"
    assert analysis_tool.main([str(run), "--output", str(out), "--samples", "64",
                               "--batch-size", "16"]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    rows = summary["fewest_steps"] + summary["most_steps"]
    assert rows  # tokens seen >= 20 times in 64 x 16 positions (" the", ",", ...)
    # token texts, not byte-level vocabulary entries ("Ġthe" is " the", "Ċ" a newline)
    assert all(r["text"] == tok.token_text(r["token"]) for r in rows)
    assert not any("\u0120" in r["text"] or "\u010a" in r["text"] for r in rows)
    assert any(r["text"].startswith(" ") for r in rows)
