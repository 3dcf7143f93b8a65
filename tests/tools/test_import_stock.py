"""import-hf on stock Llama, Mistral and Qwen2 checkpoints (tiny random models made with
transformers, one safetensors file or sharded): imported as vanilla the logits equal the
Hugging Face model's and the export gives back the original tensors; imported as ponderlm2
the export loads back and equals our forward."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from megatron_ponder.export.hf_folder import read_weights
from megatron_ponder.inference.checkpoint_io import checkpoint_config, load_model
from megatron_ponder.inference.scoring import hard_forward
from stock_models import save_stock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402

RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")
# Max abs difference of fp32 logits (of order one here); measured: 2.4e-6 to 3.8e-6 against
# transformers' model, 0 between our ponderlm2 forward and its export.
TOL = 1e-5
PLAIN_CLASS = {"llama": "LlamaForCausalLM", "mistral": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def import_stock(folder, run, tokenizer, method, k, *overrides):
    return convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE, "--method",
                              method, "--k", str(k), f"data.tokenizer={tokenizer}", *overrides])


def random_tokens(length=40):
    return torch.randint(0, 512, (2, length), generator=torch.Generator().manual_seed(7))


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "sharded"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_vanilla_import_equals_hf_and_exports_the_original_tensors(tmp_path, tool_tokenizer, arch,
                                                                   sharded):
    from transformers import AutoModelForCausalLM

    hf = save_stock(tmp_path / "hf", arch, sharded=sharded)
    assert import_stock(tmp_path / "hf", tmp_path / "run", tool_tokenizer, "vanilla", 0) == 0
    model, cfg = load_model(tmp_path / "run", device="cpu")
    assert (cfg.model.qkv_bias, cfg.model.embedding_scale) == (arch == "qwen2", 1.0)
    assert cfg.model.rotary_base == hf.config.rope_parameters["rope_theta"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    tokens = random_tokens()
    with torch.no_grad():
        expected = hf(tokens).logits
    assert expected.abs().max() > 1.0  # logits of order one: the bound below means something
    assert max_diff(hard_forward(model, tokens).logits.transpose(0, 1), expected) <= TOL

    assert export_tool.main([str(tmp_path / "run"), str(tmp_path / "export")]) == 0
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    original = read_weights(tmp_path / "hf")
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name  # bitwise, the embedding too
    tied = {"lm_head.weight"} if arch == "qwen2" else set()  # saved once by the tied original
    assert set(exported) - set(original) == tied
    if tied:
        assert torch.equal(exported["lm_head.weight"], original["model.embed_tokens.weight"])
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()  # no remote code
    assert type(back).__name__ == PLAIN_CLASS[arch]
    with torch.no_grad():
        assert max_diff(back(tokens).logits, expected) <= TOL


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_ponderlm2_import_exports_and_loads_back(tmp_path, tool_tokenizer, arch):
    from transformers import AutoModelForCausalLM

    hf = save_stock(tmp_path / "hf", arch, sharded=arch == "qwen2")
    assert import_stock(tmp_path / "hf", tmp_path / "run", tool_tokenizer, "ponderlm2", 2) == 0
    model, cfg = load_model(tmp_path / "run", device="cpu")
    tokens = random_tokens()
    ours = hard_forward(model, tokens).logits.transpose(0, 1)
    with torch.no_grad():
        vanilla = hf(tokens).logits
    assert max_diff(ours, vanilla) > 0.1  # the latent slots change the prediction

    assert export_tool.main([str(tmp_path / "run"), str(tmp_path / "export")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export", trust_remote_code=True).eval()
    assert exported.config.embedding_scale == 1.0 and exported.config.qkv_bias == (arch == "qwen2")
    with torch.no_grad():
        assert max_diff(exported(tokens).logits, ours) <= TOL
    # ... and the export imports back exactly (the project config rides along).
    assert convert_tool.main(["import-hf", str(tmp_path / "export"), str(tmp_path / "back")]) == 0
    back, back_cfg = load_model(tmp_path / "back", device="cpu")
    assert back_cfg == checkpoint_config(tmp_path / "run")
    for (name, a), (_, b) in zip(model.named_parameters(), back.named_parameters()):
        assert torch.equal(a, b), name
