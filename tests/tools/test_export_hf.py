"""The Hugging Face export: logits equal the project's hard-masked logits, generate() equals
tools/generate.py, vanilla is a plain Llama, the tokenizer agrees with sentencepiece."""

import json
import sys
from pathlib import Path

import pytest
import torch

from checkpoints import make_checkpoint
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.inference.scoring import hard_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export_hf as export_tool  # noqa: E402
import generate as generate_tool  # noqa: E402

TOL = 1e-4  # the bound, fp32 max abs on logits


def load_hf(folder, **overrides):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **overrides).eval()


def cache_of(output):
    return getattr(output, "cache", None) or output.past_key_values


def tokens_of(tokenizer_path, texts):
    tok = Tokenizer.load(tokenizer_path)
    ids = [[tok.eod_id] + tok.encode(t) for t in texts]
    length = min(len(i) for i in ids)
    return torch.tensor([i[:length] for i in ids])


@pytest.mark.parametrize("method", ["ponderlm3", "ponderlm2", "pause"])
def test_export_logits_equal_the_hard_masked_project_logits(tmp_path, tool_tokenizer, method):
    run, model = make_checkpoint(tmp_path, tool_tokenizer, method=method)
    out = tmp_path / "hf"
    assert export_tool.main([str(run), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "modeling_ponder.py", "tokenizer.json",
        "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_ponder.PonderLMForCausalLM"
    tokens = tokens_of(tool_tokenizer, ["The river flows past the old mill and",
                                        "In the beginning there was a small town"])
    hf = load_hf(out)
    with torch.no_grad():
        got = hf(tokens).logits
    expected = hard_forward(model, tokens)
    assert (got - expected.logits.transpose(0, 1)).abs().max().item() <= TOL
    if method == "ponderlm3":
        assert len(set(expected.kept_steps(0.05).flatten().tolist())) >= 2
        # tau overridden at load time: the export follows the project's forward at that tau.
        coarse = load_hf(out, ponder_tau=0.3)
        assert coarse.config.ponder_tau == 0.3
        with torch.no_grad():
            got = coarse(tokens).logits
        expected = hard_forward(model, tokens, tau=0.3).logits.transpose(0, 1)
        assert (got - expected).abs().max().item() <= TOL
        # K_max = 1: every token keeps min(its steps at K_max = K, 1) latent steps.
        capped = load_hf(out, ponder_max_steps=1)
        with torch.no_grad():
            full_cache = cache_of(hf(tokens, use_cache=True))
            capped_logits = capped(tokens).logits
            capped_cache = cache_of(capped(tokens, use_cache=True))
        assert max(s for row in full_cache.steps for s in row) >= 2
        assert capped_cache.steps == [[min(s, 1) for s in row] for row in full_cache.steps]
        assert capped_cache.lengths.tolist() == [len(row) + sum(row) for row in capped_cache.steps]
        assert (capped_logits - hf(tokens).logits).abs().max().item() > TOL  # the cap acts


def test_export_generate_equals_the_generate_tool(tmp_path, tool_tokenizer, capsys):
    run, _ = make_checkpoint(tmp_path, tool_tokenizer)
    out = tmp_path / "hf"
    assert export_tool.main([str(run), str(out)]) == 0
    capsys.readouterr()
    prompts = ["The river", "A small"]
    assert generate_tool.main([str(run), "--max-new-tokens", "10", "--json"]
                              + [a for p in prompts for a in ("--prompt", p)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hf = load_hf(out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    for prompt, row in zip(prompts, rows):
        ids = tokenizer(prompt, return_tensors="pt").input_ids  # BOS = </s>, as the tool does
        generated = hf.generate(ids, max_new_tokens=10, do_sample=False,
                                return_dict_in_generate=True)
        new = generated.sequences[0, ids.shape[1]:].tolist()
        assert new == row["token_ids"]
        cache = cache_of(generated)
        # The cache holds the prompt and every generated token but the last; steps agree.
        assert cache.steps[0][1:] == row["steps"]
        assert int(cache.lengths[0]) == len(cache.steps[0]) + sum(cache.steps[0])
    assert len({s for r in rows for s in r["steps"]}) >= 2  # pondering really varied


def test_vanilla_exports_as_plain_llama(tmp_path, tool_tokenizer):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    run, model = make_checkpoint(tmp_path, tool_tokenizer, method="vanilla", k=0)
    out = tmp_path / "hf"
    assert export_tool.main([str(run), str(out)]) == 0
    assert not (out / "modeling_ponder.py").exists()
    llama = AutoModelForCausalLM.from_pretrained(out).eval()  # no remote code
    assert type(llama) is LlamaForCausalLM
    tokens = tokens_of(tool_tokenizer, ["The river flows past the old mill"])
    with torch.no_grad():
        got = llama(tokens).logits
    expected = hard_forward(model, tokens).logits.transpose(0, 1)
    assert (got - expected).abs().max().item() <= TOL


def test_exported_tokenizer_encodes_like_sentencepiece(tmp_path, tool_tokenizer):
    from transformers import AutoTokenizer

    run, _ = make_checkpoint(tmp_path, tool_tokenizer, method="ponderlm2", k=1)
    out = tmp_path / "hf"
    assert export_tool.main([str(run), str(out)]) == 0
    hf = AutoTokenizer.from_pretrained(out)
    sp = Tokenizer.load(tool_tokenizer)
    for text in ["The river flows past the old mill.", "Numbers 1984 and 2.5%", "Ünïcødé ok",
                 "Line one\nLine two"]:
        assert hf(text).input_ids == [sp.eod_id] + sp.encode(text)
        assert hf.decode(hf(text).input_ids, skip_special_tokens=True) == text


def test_export_refuses_bad_input(tmp_path, tool_tokenizer, capsys):
    run, _ = make_checkpoint(tmp_path, tool_tokenizer, method="loop", k=1)
    assert export_tool.main([str(run), str(tmp_path / "hf")]) == 2
    assert "cannot be exported" in capsys.readouterr().err
    run, _ = make_checkpoint(tmp_path, tool_tokenizer)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert export_tool.main([str(run), str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert export_tool.main([str(run), str(tmp_path / "x"), "--tau", "1.0"]) == 2
    assert "ponder.tau" in capsys.readouterr().err
    from transformers import AutoModelForCausalLM
    assert export_tool.main([str(run), str(tmp_path / "ok")]) == 0
    with pytest.raises(ValueError, match="ponder_tau"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "ok", trust_remote_code=True, ponder_tau=2.0)
