"""export/modeling_ponder.py keeps its own copy of the method facts (the file must load
without the package): the copy equals the registry, and every method the file supports
behaves in it as in the package (the parallel hard forward and token-by-token decoding)."""

import ast
from pathlib import Path

import pytest
import torch

from factories import tiny_config
from routers import random_tokens, randomise_router
from threads import _one_thread  # noqa: F401 (autouse fixture)
from megatron_ponder.export import modeling_ponder as hf
from megatron_ponder.export.hf_weights import to_hf
from megatron_ponder.inference.decoding import SlotDecoder
from megatron_ponder.inference.kv_cache import SlotKVCache
from megatron_ponder.inference.scoring import hard_forward
from megatron_ponder.ponder.registry import METHODS, method_class, names_where

DECODABLE = names_where(lambda m: m.decodes_with_slot_cache)
TOL = 1e-4  # fp32 max abs on logits (the export's bound): two implementations, other kernels
TAU = 0.2


def test_the_file_imports_nothing_of_the_package():
    tree = ast.parse(Path(hf.__file__).read_text())
    modules = [alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "torch" in modules and not [m for m in modules if m.startswith("megatron")]


def test_the_copy_holds_the_slot_cache_methods_with_the_registry_facts():
    assert sorted(hf.METHODS) == sorted(DECODABLE) and len(DECODABLE) < len(METHODS)
    for name, copy in hf.METHODS.items():
        m = method_class(name)
        assert (copy.uses_router, copy.uses_pause, copy.uses_jacobi, copy.plain) == (
            m.uses_router, m.uses_pause, m.uses_jacobi, m.plain), name
        assert [copy.latent_steps(k) for k in range(5)] == [m(k=k).latent_steps for k in range(5)]


def hf_twin_config(cfg):
    m, p = cfg.model, cfg.ponder
    return hf.PonderLMConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.kv_heads, max_position_embeddings=m.max_position_embeddings,
        rope_theta=m.rotary_base, rms_norm_eps=m.norm_eps, head_dim=m.head_dim,
        qk_norm=m.qk_norm, rope_scaling_type=m.rope_scaling, rope_scaling_factor=m.rope_scaling_factor,
        rope_low_freq_factor=m.rope_low_freq_factor, rope_high_freq_factor=m.rope_high_freq_factor,
        rope_original_max_positions=m.rope_original_max_positions, rope_beta_fast=m.rope_beta_fast,
        rope_beta_slow=m.rope_beta_slow, rope_attention_factor=m.rope_attention_factor,
        # to_hf folds the embedding scale into a plain method's weights (a stock Llama).
        embedding_scale=1.0 if method_class(p.method).plain else None,
        ponder_method=p.method, ponder_k=p.k, ponder_tau=TAU, ponder_jacobi=p.jacobi_eval,
        ponder_latent_init=p.latent_init, ponder_router=p.router)


def hf_twin(model, cfg):
    """The package model's weights in modeling_ponder's PonderLMForCausalLM (no folder)."""
    twin = hf.PonderLMForCausalLM(hf_twin_config(cfg)).eval()
    state = {name: t.detach().float() for name, t in model.named_parameters()}
    twin.load_state_dict(to_hf(state, cfg), strict=True)
    return twin


# Today's families: Qwen3's q/k norms and wide heads with Llama 3.1's RoPE scaling (original
# context 8 of 32 positions: every band of the scaling is crossed), and linear scaling with
# Mistral-Nemo's narrow heads.
MODERN = {
    "qwen3-llama3": dict(head_dim=16, qk_norm=True, rope_scaling="llama3", rope_scaling_factor=8.0,
                         rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                         rope_original_max_positions=8),
    "nemo-linear": dict(head_dim=4, rope_scaling="linear", rope_scaling_factor=4.0),
    "yarn": dict(rope_scaling="yarn", rope_scaling_factor=4.0, rope_original_max_positions=8,
                 rope_beta_fast=32.0, rope_beta_slow=1.0, rope_attention_factor=1.2),
}


def test_the_copy_computes_the_package_rope_frequencies():
    from megatron_ponder.model.rope import inverse_frequencies

    for fields in MODERN.values():
        cfg = tiny_config("ponderlm3", k=2, **fields)
        twin_config = hf_twin_config(cfg)
        assert torch.equal(hf.inverse_frequencies(twin_config), inverse_frequencies(cfg.model))


@pytest.mark.parametrize("name,model", [(n, None) for n in DECODABLE]
                         + [("ponderlm3", m) for m in MODERN])
@torch.no_grad()
def test_each_method_behaves_in_the_copy_as_in_the_package(build, name, model):
    cfg = tiny_config(name, k=2, **MODERN.get(model, {}))
    model = build(cfg).eval()
    if method_class(name).uses_router:
        randomise_router(model, scale=0.5, bias=[0.0, 0.0, -1.5])
    twin = hf_twin(model, cfg)
    tokens = random_tokens(cfg.model.vocab_size, batch=2, length=8)
    parallel = hard_forward(model, tokens, tau=TAU).logits.transpose(0, 1)
    assert (twin(tokens).logits - parallel).abs().max().item() <= TOL

    # Prefill 3 tokens, then decode the rest one by one: logits and latent steps agree.
    engine, prompt = SlotDecoder(model, TAU), 3
    cache = SlotKVCache(2, tokens.shape[1] * engine.slots_per_token)
    for row in range(2):
        engine.prefill(cache, row, tokens[row, :prompt])
    hf_cache = getattr(twin(tokens[:, :prompt], use_cache=True), hf._CACHE_FIELD)
    rows, steps = torch.arange(2), []
    for t in range(prompt, tokens.shape[1]):
        logits, kept = engine.feed(cache, rows, tokens[:, t], torch.full((2,), t))
        assert (twin.decode_token(hf_cache, tokens[:, t]) - logits).abs().max().item() <= TOL
        steps.append(kept.tolist())
    assert [row[prompt:] for row in hf_cache.steps] == [list(s) for s in zip(*steps)]
    assert cache.lengths.tolist() == hf_cache.lengths.tolist()
    if method_class(name).uses_router:
        assert len({s for row in steps for s in row}) >= 2, steps  # the router really decided
