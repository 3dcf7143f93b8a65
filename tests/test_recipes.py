"""The shipped recipes: every one loads; the paper recipes hold PonderLM-2's settings
(method.md section 8), build a model of the hand-computed size, and cost what
megatron_ponder.ponder.flops says, checked against explicit arithmetic.

The paper-size models are built on torch's meta device: the real megatron-core modules and
parameter shapes, no storage (test_meta_build_matches_a_real_build shows the two agree).
Run with -s (or -rA) to see the figures; they are also attached with record_property.
"""

import math
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from factories import tiny_config
from megatron_ponder.config import load_config
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import method_class

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
# recipes/sweeps/ holds sweep files (a grid of recipes): tests/sweeps/test_sweep_spec.py.
ALL_RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml")
                     if p.relative_to(RECIPES_DIR).parts[0] != "sweeps")
SIZES = ("125m", "410m", "1.4b", "7b")
METHODS = ("vanilla", "ponderlm2", "ponderlm3")
PAPER = [(size, method) for size in SIZES for method in METHODS]

V, SEQ, K = 50304, 2048, 3
# size: hidden, layers, heads, SwiGLU width, lr, tensor-parallel size, micro-batch
SHAPES = {
    "125m": dict(hidden=768, layers=12, heads=12, ffn=2064, lr=3e-4, tp=1, micro=2),
    "410m": dict(hidden=1024, layers=24, heads=16, ffn=2752, lr=3e-4, tp=1, micro=1),
    "1.4b": dict(hidden=2048, layers=24, heads=32, ffn=5504, lr=2e-4, tp=2, micro=4),
    "7b": dict(hidden=4096, layers=32, heads=32, ffn=11008, lr=1.2e-4, tp=4, micro=2),
}
# Recomputation where the planner needs it (memory only: tests/model/test_recompute.py).
RECOMPUTE = {("1.4b", "ponderlm2"): "layers", ("1.4b", "ponderlm3"): "layers",
             ("7b", "ponderlm2"): "layers", ("7b", "ponderlm3"): "layers"}
GPUS, GPU_GB = 8, 80.0
# The planner counts tensors; the caching allocator's fragmentation and the CUDA and NCCL
# contexts come on top (not measured here): a recipe leaves them a tenth of the memory.
HEADROOM = 0.9
# SwiGLU widths of PonderLM-2's public llama_config/{125m,410m,1.4b}/config.json and LLaMA-2
# 7B's (the recipes use them), and what ModelConfig's default rule 64 * ceil(8H / 3 / 64) would
# give instead.
PONDERLM2_FFN = {"125m": 2064, "410m": 2752, "1.4b": 5504, "7b": 11008}
RULE_FFN = {"125m": 2048, "410m": 2752, "1.4b": 5504, "7b": 10944}

# Non-embedding parameters N, per layer: QKV H*(H + 2*kv*d) + proj H*H + SwiGLU 3*H*F
# + 2 RMSNorms 2H; then the final norm H. Full multi-head attention: kv*d = H.
NON_EMBEDDING = {
    "125m": 12 * (768 * (768 + 2 * 12 * 64) + 768 * 768 + 3 * 768 * 2064 + 2 * 768) + 768,
    "410m": 24 * (1024 * (1024 + 2 * 16 * 64) + 1024 * 1024 + 3 * 1024 * 2752 + 2 * 1024) + 1024,
    "1.4b": 24 * (2048 * (2048 + 2 * 32 * 64) + 2048 * 2048 + 3 * 2048 * 5504 + 2 * 2048) + 2048,
    "7b": 32 * (4096 * (4096 + 2 * 32 * 128) + 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + 4096,
}
# + embedding V*H + untied LM head V*H (+ router Linear(H, K+1): (K+1)*(H+1) for ponderlm3).
PARAMS = {size: NON_EMBEDDING[size] + 2 * V * SHAPES[size]["hidden"] for size in SIZES}
ROUTER_PARAMS = {size: (K + 1) * (SHAPES[size]["hidden"] + 1) for size in SIZES}
PINNED = {  # the same numbers, written out
    "125m": (85_396_224, 162_663_168), "410m": (303_612_928, 406_635_520),
    "1.4b": (1_214_351_360, 1_420_396_544), "7b": (6_476_271_616, 6_888_361_984),
}


def recipe(size: str, method: str) -> Path:
    return RECIPES_DIR / "paper" / size / f"{method}.yaml"


def test_every_paper_recipe_exists():
    assert {recipe(s, m) for s, m in PAPER} <= set(ALL_RECIPES)


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_every_recipe_loads(path):
    load_config(path)  # unknown keys, wrong types and invalid values all raise


@pytest.mark.parametrize("size, method", PAPER)
def test_paper_settings(size, method):
    cfg = load_config(recipe(size, method))
    s, m, p, t, d = SHAPES[size], cfg.model, cfg.ponder, cfg.train, cfg.data
    assert (m.hidden_size, m.num_layers, m.num_attention_heads) == (s["hidden"], s["layers"], s["heads"])
    assert (m.vocab_size, m.kv_heads, m.norm_eps, m.max_position_embeddings) == (V, s["heads"], 1e-5, SEQ)
    assert m.ffn_size == s["ffn"] == PONDERLM2_FFN[size]
    assert 64 * math.ceil(8 * m.hidden_size / 3 / 64) == RULE_FFN[size]
    assert d.seq_length == SEQ
    assert (t.lr, t.adam_beta1, t.adam_beta2, t.weight_decay) == (s["lr"], 0.9, 0.95, 0.1)
    assert (t.min_lr_ratio, t.warmup_fraction, t.steps, t.precision) == (0.1, 0.02, 50_000, "auto")
    assert t.global_batch_size * SEQ == 524_288  # tokens per step
    assert (p.method, p.k, p.tau, p.jacobi_train, p.jacobi_eval) == (method, K, 1e-4, [2, 3], 3)
    assert (p.grad_passes, p.compute_penalty, p.latent_init) == (0, 0.0, "growth")
    assert cfg.parallel.tensor_model_parallel_size == s["tp"]
    assert (t.micro_batch_size, t.recompute) == (s["micro"], RECOMPUTE.get((size, method), "none"))


@pytest.mark.parametrize("size", SIZES)
def test_recipes_of_one_size_differ_only_in_the_method(size):
    def comparable(method):
        cfg = asdict(load_config(recipe(size, method)))
        cfg["train"].pop("recompute")  # memory only, where the planner needs it
        assert cfg["ponder"].pop("method") == method
        assert cfg["train"].pop("output_dir") == f"runs/paper/{size}_{method}"
        assert cfg["logging"].pop("run_name") == f"{size}_{method}"
        return cfg

    assert comparable("vanilla") == comparable("ponderlm2") == comparable("ponderlm3")


def meta_model(cfg):
    """The real PonderLM on the meta device: megatron's CPU-initialisation path creates
    its master weights with torch.empty, which lands on meta too; nothing is allocated."""
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel

    initialize_parallel(cfg)
    with torch.device("meta"):
        return build_model(cfg)


def test_meta_build_matches_a_real_build(build):
    cfg = tiny_config("ponderlm3", 3)
    real = [(n, p.shape) for n, p in build(cfg).named_parameters()]
    meta = meta_model(cfg)
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == real


@pytest.mark.parametrize("size, method", PAPER)
def test_parameter_count(size, method, record_property):
    # At TP 1 every parameter is whole: the count is the model's, not one shard's.
    cfg = load_config(recipe(size, method), ["parallel.tensor_model_parallel_size=1"])
    model = meta_model(cfg)
    count = sum(p.numel() for p in model.parameters())
    expected = PARAMS[size] + (ROUTER_PARAMS[size] if method == "ponderlm3" else 0)
    record_property("parameters", count)
    print(f"{size} {method}: {count:,} parameters")
    assert count == expected
    assert (NON_EMBEDDING[size], PARAMS[size]) == PINNED[size]
    assert DecoderShape.of(cfg.model).non_embedding_params == NON_EMBEDDING[size]


def causal_pairs(s: int) -> int:
    """(query, key) pairs of one causal pass over s positions."""
    return s * (s + 1) // 2


def hand_figures(size: str) -> dict[str, int]:
    """Explicit arithmetic of flops.py's conventions (multiply-add = 2 FLOPs, backward = 2x
    forward, causal attention counts the scores it computes) for one sequence of 2048."""
    h, n = SHAPES[size]["hidden"], NON_EMBEDDING[size]
    att = 4 * h * SHAPES[size]["layers"]  # QK^T and AV per attended key, all layers
    head = 2 * h * V                      # LM head per token
    router = 2 * h * (K + 1)              # Linear(H, K+1) per token
    # vanilla: one pass of 2048 slots.
    vanilla_fwd = 2 * n * SEQ + att * causal_pairs(SEQ) + head * SEQ
    # K 3, J 3: pass 0, growth passes of 2 and 3 slots per token, J + 1 = 4 full passes of 4.
    latent_fwd = (2 * n * SEQ * (1 + 2 + 3 + 4 + 4 + 4 + 4)
                  + att * (causal_pairs(SEQ) + causal_pairs(2 * SEQ) + causal_pairs(3 * SEQ)
                           + 4 * causal_pairs(4 * SEQ))
                  + head * SEQ)
    return {
        "train_vanilla": 3 * vanilla_fwd,
        "train_ponderlm2": 3 * latent_fwd,
        "train_ponderlm3": 3 * (latent_fwd + 7 * router * SEQ),  # router after all 7 passes
        # Per token with a KV cache, mean over the 2048 tokens: token t attends to t keys
        # (mean 2049/2); PonderLM-2's 4 slots per token fill a 4 x 2048 cache whose slot j
        # attends to j keys: causal_pairs(4 x 2048) / 2048 per token.
        "infer_vanilla": 2 * n + att * (SEQ + 1) // 2 + head,
        "infer_ponderlm2": (K + 1) * 2 * n + att * causal_pairs(4 * SEQ) // SEQ + head,
        "router": router,
    }


@pytest.mark.parametrize("size", SIZES)
def test_flops(size, record_property):
    shape = DecoderShape.of(load_config(recipe(size, "ponderlm3")).model)
    hand = hand_figures(size)
    schedule = [1, 2, 3, 4, 4, 4, 4]
    train = {
        "vanilla": method_class("vanilla")(k=K).training_flops(shape, [1], SEQ),
        "ponderlm2": method_class("ponderlm2")(k=K).training_flops(shape, schedule, SEQ),
        "ponderlm3": method_class("ponderlm3")(k=K).training_flops(shape, schedule, SEQ),
    }
    for method, value in train.items():
        assert value == hand[f"train_{method}"]
    # All figures are integers below 2**53 and the mean divides by 2048: exact in float64.
    vanilla = method_class("vanilla")(k=K).inference_flops_per_token(shape, SEQ)
    ponderlm2 = method_class("ponderlm2")(k=K).inference_flops_per_token(shape, SEQ)
    assert vanilla == hand["infer_vanilla"] and ponderlm2 == hand["infer_ponderlm2"]
    # PonderLM-3's range: from every step pruned to every step kept, plus the router.
    none = method_class("ponderlm3")(k=K).inference_flops_per_token(shape, SEQ, torch.zeros(1, SEQ))
    every = method_class("ponderlm3")(k=K).inference_flops_per_token(shape, SEQ, torch.full((1, SEQ), K))
    assert (none, every) == (vanilla + hand["router"], ponderlm2 + hand["router"])

    ratio = ponderlm2 / vanilla
    assert ratio == pytest.approx(hand["infer_ponderlm2"] / hand["infer_vanilla"], rel=1e-15)
    figures = {f"train_flops_per_sequence_{m}": v for m, v in train.items()}
    figures |= {"infer_flops_per_token_vanilla": vanilla,
                "infer_flops_per_token_ponderlm2": ponderlm2,
                "infer_ratio_ponderlm2_vs_vanilla": ratio}
    for key, value in figures.items():
        record_property(key, value)
    print(f"\n{size}: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) and not v.is_integer() else f"{k} {int(v):,}"
        for k, v in figures.items()))


@pytest.mark.parametrize("size, method", PAPER)
def test_paper_recipe_fits_and_states_its_predicted_peak(size, method, record_property):
    """The planner (megatron_ponder/memory) says every paper recipe fits 8 x 80 GB GPUs with
    a tenth to spare, and the recipe's comment states the planner's current figure."""
    from megatron_ponder.memory.plan import plan_memory

    path = recipe(size, method)
    plan = plan_memory(load_config(path), GPUS, GPU_GB)
    record_property("predicted_peak_gb", plan.peak / 1e9)
    assert plan.peak <= HEADROOM * GPU_GB * 1e9, (size, method, plan.peak / 1e9)
    stated = re.search(r"# Predicted peak per GPU on 8 x 80 GB: ([0-9.]+) GB", path.read_text())
    assert stated and float(stated.group(1)) == round(plan.peak / 1e9, 1), (
        f"{path}: state the planner's {plan.peak / 1e9:.1f} GB")


@pytest.mark.parametrize("size", SIZES)
def test_method_recipes_only_add_the_method_to_their_size(size):
    """No copies: a method's recipe holds its base, the method, its output names and at most
    the memory setting; everything else is its size's base.yaml."""
    for method in METHODS:
        data = yaml.safe_load(recipe(size, method).read_text())
        assert data.pop("base") == "base.yaml"
        assert data.pop("ponder") == {"method": method}
        assert data.pop("logging") == {"run_name": f"{size}_{method}"}
        train = data.pop("train")
        assert train.pop("output_dir") == f"runs/paper/{size}_{method}"
        assert set(train) <= {"recompute"} and not data, (method, train, data)
