"""import-hf on stock Llama, Mistral, Qwen2 and Qwen3 checkpoints (tiny random models made with
transformers, one safetensors file or sharded; Llama 3.x / linear RoPE scaling, Qwen3's q/k
norms and head_dim, a tied SmolLM2, Mistral-Nemo's narrow heads): imported as vanilla the
logits equal the Hugging Face model's, below and above the scaled RoPE's original context, and
the export is the stock class with the original tensors; imported as ponderlm2 the export
loads back and equals our forward; imported as ponderlm3 the export's logits and greedy
generation equal the project's."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from megatron_ponder.export.hf_folder import read_weights
from megatron_ponder.inference.model_loading import load_model
from megatron_ponder.inference.scoring import hard_forward
from megatron_ponder.run.checkpoint_read import checkpoint_config
from routers import randomise_router
from megatron_ponder.training.initial_checkpoint import save_training_checkpoint
from stock_models import ORIGINAL_CONTEXT, save_stock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402
import generate as generate_tool  # noqa: E402

RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")
# Max abs difference of fp32 logits (of order one here); measured: 2.4e-6 to 3.8e-6 against
# transformers' model, 0 between our ponderlm2 forward and its export.
TOL = 1e-5
PLAIN_CLASS = {"llama": "LlamaForCausalLM", "mistral": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "llama3": "LlamaForCausalLM", "llama-linear": "LlamaForCausalLM",
               "llama-yarn": "LlamaForCausalLM",
               "qwen3": "Qwen3ForCausalLM", "smollm2": "LlamaForCausalLM",
               "mistral-nemo": "LlamaForCausalLM"}
TIED = {"qwen2", "smollm2"}
# Below and above the original context of the scaled RoPE (64 positions in all).
LENGTHS = (ORIGINAL_CONTEXT - 8, 60)
# PonderLM-3's export against our forward: two implementations through 5 passes with a
# soft-masked fusion (the bound of tests/tools/test_export_hf.py). Measured: up to 1.2e-5.
EXPORT_TOL = 1e-4
MODERN = ["llama3", "llama-linear", "llama-yarn", "qwen3", "smollm2", "mistral-nemo"]


def import_stock(folder, run, tokenizer, method, k, *overrides):
    return convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE, "--method",
                              method, "--k", str(k), f"data.tokenizer={tokenizer}", *overrides])


def head_dim(config) -> int:
    """A stock config's head size (Qwen2's config has no head_dim field)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def random_tokens(length=40):
    return torch.randint(0, 512, (2, length), generator=torch.Generator().manual_seed(7))


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("arch,sharded", [(a, s) for a in ("llama", "mistral", "qwen2")
                                           for s in (False, True)] + [(a, False) for a in MODERN],
                         ids=lambda v: {False: "one-file", True: "sharded"}.get(v, v))
def test_vanilla_import_equals_hf_and_exports_the_original_tensors(tmp_path, tool_tokenizer, arch,
                                                                   sharded):
    from transformers import AutoModelForCausalLM

    hf = save_stock(tmp_path / "hf", arch, sharded=sharded)
    assert import_stock(tmp_path / "hf", tmp_path / "run", tool_tokenizer, "vanilla", 0) == 0
    model, cfg = load_model(tmp_path / "run", device="cpu")
    m = cfg.model
    assert (m.qkv_bias, m.qk_norm, m.embedding_scale) == (arch == "qwen2", arch == "qwen3", 1.0)
    assert m.rotary_base == hf.config.rope_parameters["rope_theta"]
    assert m.rope_scaling == {"llama3": "llama3", "llama-linear": "linear",
                              "llama-yarn": "yarn"}.get(arch)
    assert m.head_size == head_dim(hf.config)
    assert (m.head_dim is None) == (head_dim(hf.config) * m.num_attention_heads == m.hidden_size)
    assert (tmp_path / "run" / "config.yaml").is_file()
    expected = {}
    for length in LENGTHS:
        tokens = random_tokens(length)
        with torch.no_grad():
            expected[length] = (tokens, hf(tokens).logits)
        assert expected[length][1].abs().max() > 1.0  # logits of order one: the bound means something
        diff = max_diff(hard_forward(model, tokens).logits.transpose(0, 1), expected[length][1])
        assert diff <= TOL, (length, diff)

    assert export_tool.main([str(tmp_path / "run"), str(tmp_path / "export")]) == 0
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    original = read_weights(tmp_path / "hf")
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name  # bitwise, the embedding too
    tied = {"lm_head.weight"} if arch in TIED else set()  # saved once by the tied original
    assert set(exported) - set(original) == tied
    if tied:
        assert torch.equal(exported["lm_head.weight"], original["model.embed_tokens.weight"])
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()  # no remote code
    assert type(back).__name__ == PLAIN_CLASS[arch]
    # The original's RoPE settings, plus (YaRN) the defaults it left to transformers, spelled out.
    original_rope = hf.config.rope_parameters
    assert {k: back.config.rope_parameters[k] for k in original_rope} == original_rope
    assert head_dim(back.config) == head_dim(hf.config)
    for tokens, logits in expected.values():
        with torch.no_grad():
            assert max_diff(back(tokens).logits, logits) <= TOL


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


def randomised_router_checkpoint(run, tau_bias=(0.0, 0.0, -1.5)):
    """The imported run with a router whose kept steps vary per token (its output layer starts
    at zero: every token would keep the same steps)."""
    model, cfg = load_model(run, device="cpu")
    randomise_router(model, scale=0.5, bias=list(tau_bias))
    save_training_checkpoint(model, cfg, run / "checkpoints", 0)  # replaces step 0
    return load_model(run, device="cpu")[0]


@pytest.mark.parametrize("arch", ["llama3", "llama-yarn", "qwen3", "mistral-nemo"])
def test_ponderlm3_import_exports_logits_and_greedy_generation(tmp_path, tool_tokenizer, arch,
                                                              capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save_stock(tmp_path / "hf", arch)
    run = tmp_path / "run"
    assert import_stock(tmp_path / "hf", run, tool_tokenizer, "ponderlm3", 2, "ponder.tau=0.2") == 0
    model = randomised_router_checkpoint(run)
    assert export_tool.main([str(run), str(tmp_path / "export")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export", trust_remote_code=True).eval()
    assert exported.config.qk_norm == (arch == "qwen3")
    for length in LENGTHS:
        tokens = random_tokens(length)
        expected = hard_forward(model, tokens, tau=0.2)
        with torch.no_grad():
            diff = max_diff(exported(tokens).logits, expected.logits.transpose(0, 1))
        assert diff <= EXPORT_TOL, (length, diff)
    assert len(set(expected.kept_steps(0.2).flatten().tolist())) >= 2  # the router decided

    # Greedy generation: the export's generate() gives the generate tool's tokens and steps.
    capsys.readouterr()
    prompt = "The river flows past the old mill and"
    assert generate_tool.main([str(run), "--max-new-tokens", "12", "--json", "--prompt", prompt]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    ids = AutoTokenizer.from_pretrained(tmp_path / "export")(prompt, return_tensors="pt").input_ids
    generated = exported.generate(ids, max_new_tokens=12, do_sample=False,
                                  return_dict_in_generate=True)
    assert generated.sequences[0, ids.shape[1]:].tolist() == row["token_ids"]
    cache = getattr(generated, "cache", None) or generated.past_key_values
    assert cache.steps[0][1:] == row["steps"]
