"""FLOPs accounting (method.md section 6) on a shape small enough to add up by hand.

Shape: H 8, 1 layer, SwiGLU width 16, 2 query heads of dim 4, 1 K/V head, vocabulary 10.
  non-embedding parameters N = 1 * (QKV 8*(8 + 2*1*4) + proj 8*8 + SwiGLU 3*8*16 + norms 2*8)
                               + final norm 8 = 128 + 64 + 384 + 16 + 8 = 600
  one attended key, all layers (QK^T and AV, 2 FLOPs per multiply-add): 4 * 2*4 * 1 = 32
  LM head per token: 2 * 8 * 10 = 160; router per token: 2 * 8 * (K+1)
Every figure below is an exact integer (inference means are of integers: exact in float64).
"""

import pytest
import torch

from factories import tiny_config
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import method_class

TINY = dict(vocab_size=10, hidden_size=8, num_layers=1, ffn_hidden_size=16,
            num_attention_heads=2, num_query_groups=1)
SHAPE = DecoderShape(hidden=8, layers=1, ffn=16, heads=2, kv_heads=1, vocab=10)
N = 1 * (8 * (8 + 2 * 1 * 4) + 8 * 8 + 3 * 8 * 16 + 2 * 8) + 8
ATT = 4 * 2 * 4 * 1  # per attended key, all layers
HEAD = 2 * 8 * 10    # LM head (or softmax @ E) per token
L, K, J = 3, 2, 2    # tokens, latent steps, Jacobi iterations
ROUTER = 2 * 8 * (K + 1)

# Pass schedules (slots per token of each pass) for K 2, J 2: the model reports them too.
SCHEDULES = {
    "vanilla": [1],
    "pause": [K + 1],
    "loop": [1] * (K + 1),
    "ponderlm1": [1] * (K + 1),
    "ponderlm2": [1, 2, 3, 3, 3],  # pass 0, growth m = 1, J + 1 = 3 full passes
    "ponderlm3": [1, 2, 3, 3, 3],
}


def test_hand_constants():
    assert N == 600 and ATT == 32 and HEAD == 160 and ROUTER == 48


def test_shape_of_config():
    assert DecoderShape.of(tiny_config("vanilla", K, **TINY).model) == SHAPE
    assert SHAPE.head_dim == 4


def test_non_embedding_params_follow_an_explicit_head_dim(build):
    """model.head_dim (Qwen3, Mistral-Nemo) sizes q, k, v and the output projection."""
    cfg = tiny_config("vanilla", K, **TINY, head_dim=6)
    shape = DecoderShape.of(cfg.model)
    assert shape.head_dim == 6
    model = build(cfg)
    excluded = ("decoder.embedding.", "decoder.output_layer.")
    stack = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(excluded))
    # QKV 8 x (2 + 2 x 1) x 6, projection 12 x 8, SwiGLU 3 x 8 x 16, norms 2 x 8, final norm 8.
    assert shape.non_embedding_params == stack == 8 * 24 + 12 * 8 + 3 * 8 * 16 + 16 + 8


@pytest.mark.parametrize("method", list(SCHEDULES))
def test_non_embedding_params_equal_the_real_model_minus_embedding_head_and_extras(method, build):
    model = build(tiny_config(method, K, **TINY))
    excluded = ("decoder.embedding.", "decoder.output_layer.", "decoder.router.",
                "decoder.pause_embedding")
    stack = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(excluded))
    assert SHAPE.non_embedding_params == stack == N
    extras = {name: p.numel() for name, p in model.named_parameters() if name.startswith(excluded)}
    expected = {"decoder.embedding.weight": 10 * 8, "decoder.output_layer.weight": 10 * 8}
    if method == "ponderlm3":  # Linear(H, K+1)
        expected |= {"decoder.router.net.weight": (K + 1) * 8, "decoder.router.net.bias": K + 1}
    if method == "pause":      # one learned pause vector
        expected |= {"decoder.pause_embedding": 8}
    assert extras == expected


@pytest.mark.parametrize("method, jacobi, latent_init, slots", [
    *[(m, J, "growth", s) for m, s in SCHEDULES.items()],
    ("ponderlm3", 3, "growth", [1, 2, 3, 3, 3, 3]),
    ("ponderlm2", 2, "copy", [1, 3, 3, 3]),
])
def test_model_reports_the_schedule_the_accounting_assumes(method, jacobi, latent_init, slots, build):
    model = build(tiny_config(method, K, overrides=[f"ponder.latent_init={latent_init}"], **TINY))
    with torch.no_grad():
        out = model(torch.zeros(1, L, dtype=torch.long), jacobi=jacobi)
    assert out.pass_slots == slots


def test_pass_and_head_flops():
    # S = slots * tokens positions; causal attention over S(S+1)/2 (query, key) pairs.
    assert SHAPE.pass_flops(L, 1) == 2 * 600 * 3 + 32 * (3 * 4 // 2) == 3792
    assert SHAPE.pass_flops(L, 2) == 2 * 600 * 6 + 32 * (6 * 7 // 2) == 7872
    assert SHAPE.pass_flops(L, 3) == 2 * 600 * 9 + 32 * (9 * 10 // 2) == 12240
    assert SHAPE.head_flops(L) == 160 * 3 == 480
    assert SHAPE.attention_flops(5) == 32 * 5


P1, P2, P3 = 3792, 7872, 12240  # pass_flops(L, 1 / 2 / 3 slots)
FORWARD = {
    "vanilla": P1 + 480,
    "pause": P3 + 480,                           # K pause slots per token, logits once
    "loop": 3 * P1 + 480,                        # K+1 passes, one head
    "ponderlm1": 3 * P1 + 3 * 480 + 2 * 480,     # a head after every pass + K softmax @ E
    "ponderlm2": P1 + P2 + 3 * P3 + 480,
    "ponderlm3": P1 + P2 + 3 * P3 + 480 + 5 * 3 * ROUTER,  # router after each of 5 passes
}


def configured(name, **settings):
    """The method at K with these settings (config.PonderConfig's defaults otherwise)."""
    return method_class(name)(k=K, **settings)


@pytest.mark.parametrize("method", list(SCHEDULES))
def test_forward_and_training_flops(method):
    assert FORWARD == {"vanilla": 4272, "pause": 12720, "loop": 11856, "ponderlm1": 13776,
                       "ponderlm2": 48864, "ponderlm3": 49584}
    m, schedule = configured(method), SCHEDULES[method]
    fwd = m.forward_flops(SHAPE, schedule, L)
    assert fwd == FORWARD[method]
    assert m.training_flops(SHAPE, schedule, L) == 3 * fwd  # backward = 2x
    assert configured(method, grad_passes=len(schedule)).training_flops(SHAPE, schedule, L) == 3 * fwd


def test_training_flops_with_truncated_gradients():
    # grad_passes 2: passes [1, 2, 3] run without autograd (forward only), [3, 3] keep it.
    def truncated(method, grad_passes):
        return configured(method, grad_passes=grad_passes).training_flops(SHAPE, SCHEDULES[method], L)

    assert truncated("ponderlm2", 2) == 3 * 48864 - 2 * (P1 + P2 + P3) == 98784
    # PonderLM-3: the router of those three passes runs without autograd too.
    assert truncated("ponderlm3", 2) == 3 * 49584 - 2 * (P1 + P2 + P3 + 3 * 3 * ROUTER) == 100080
    # Only the latent-thought methods truncate; the others keep gradients through every pass.
    for method in ("loop", "ponderlm1", "vanilla", "pause"):
        assert truncated(method, 1) == 3 * FORWARD[method]


# Inference with a KV cache, mean over the L = 3 tokens (method.md section 6).
INFERENCE = {
    # 1 slot per token; token t attends to t keys: mean t = 2.
    "vanilla": 2 * 600 + 32 * 2 + 160,
    # K+1 = 3 slots per token over a 3x longer cache: slots 1..9 attend 1..9 keys,
    # per token 1+2+3, 4+5+6, 7+8+9 = 6, 15, 24 (mean 15).
    "ponderlm2": 3 * 2 * 600 + 32 * 15 + 160,
    "pause": 3 * 2 * 600 + 32 * 15 + 160,
    # K+1 passes over an L-long context each (mean t = 2), one head.
    "loop": 3 * (2 * 600 + 32 * 2) + 160,
    # the same passes, K+1 heads and K softmax @ E.
    "ponderlm1": 3 * (2 * 600 + 32 * 2) + (3 + 2) * 160,
}


@pytest.mark.parametrize("method", list(INFERENCE))
def test_inference_flops_per_token(method):
    assert INFERENCE == {"vanilla": 1424, "ponderlm2": 4240, "pause": 4240, "loop": 3952,
                         "ponderlm1": 4592}
    assert configured(method).inference_flops_per_token(SHAPE, L) == INFERENCE[method]


def test_ponderlm3_inference_counts_the_kept_slots():
    # K_hat = 2, 0, 1: slots 3, 1, 2; cache positions 1-3 | 4 | 5-6 -> attended 6, 4, 11.
    kept = torch.tensor([[2, 0, 1]])
    per_token = [3 * 1200 + 32 * 6, 1 * 1200 + 32 * 4, 2 * 1200 + 32 * 11]
    expected = sum(per_token) / 3 + 160 + ROUTER
    assert expected == 2832
    assert configured("ponderlm3").inference_flops_per_token(SHAPE, L, kept) == expected
    # A batch is the mean over its rows (each row its own cache).
    both = torch.tensor([[2, 0, 1], [2, 2, 2]])
    assert configured("ponderlm3").inference_flops_per_token(SHAPE, L, both) \
        == (2832 + INFERENCE["ponderlm2"] + ROUTER) / 2


def test_ponderlm3_bounds_are_ponderlm2_and_vanilla_plus_the_router():
    all_k = torch.full((2, L), K)
    none = torch.zeros(2, L, dtype=torch.long)
    assert configured("ponderlm3").inference_flops_per_token(SHAPE, L, all_k) \
        == configured("ponderlm2").inference_flops_per_token(SHAPE, L) + ROUTER == 4288
    assert configured("ponderlm3").inference_flops_per_token(SHAPE, L, none) \
        == configured("vanilla").inference_flops_per_token(SHAPE, L) + ROUTER == 1472


def test_errors():
    with pytest.raises(ValueError, match="kept_steps"):
        configured("ponderlm3").inference_flops_per_token(SHAPE, L)
    with pytest.raises(ValueError, match="ponder.method='ponderlm9' is invalid: valid values"):
        method_class("ponderlm9")
