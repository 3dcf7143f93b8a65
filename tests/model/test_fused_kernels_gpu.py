"""Transformer Engine's layer spec (model/spec.py, fused_kernels=True): RMSNorm fused into the
QKV and fc1 GEMMs, TE's SwiGLU and TE's fused RoPE compute what the local spec computes with
the same parameters, forward and backward.

CUDA with Transformer Engine only; skipped elsewhere. Written on a machine without a GPU: it
has not run yet (bench/device_check.py runs the CUDA tests).
"""

import pytest
import torch

from factories import tiny_config
from megatron_ponder.model.spec import fused_kernels_available

pytestmark = pytest.mark.skipif(
    not fused_kernels_available(torch.device("cuda")),
    reason="needs CUDA and Transformer Engine >= 1.13 (megatron's TE SwiGLU op)")

# The local spec's separate norms are TE's norms fused into the next GEMM.
LOCAL_TO_TE = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
# float32 parameters; cuBLAS may run fp32 GEMMs as TF32 (10-bit mantissa) on Ampere+.
LOGITS_ATOL = 5e-3
GRAD_RTOL = 2e-2


def te_name(name: str) -> str:
    for local, te in LOCAL_TO_TE.items():
        if name.endswith(local):
            return name[: -len(local)] + te
    return name


# Today's families on the TE spec: Qwen3's q/k norms (TE's norm) over heads wider than
# hidden / heads, with Llama 3.1's RoPE scaling in the angle table TE's fused RoPE takes.
SHAPES = {"plain": {}, "qwen3-llama3": dict(
    qk_norm=True, head_dim=32, rope_scaling="llama3", rope_scaling_factor=8.0,
    rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_positions=8)}


@pytest.mark.parametrize("shape", SHAPES)
def test_te_spec_matches_the_local_spec(build, shape):
    from megatron.core.extensions.transformer_engine import TELayerNormColumnParallelLinear

    from megatron_ponder.model import build_model

    cfg = tiny_config("ponderlm3", k=2, hidden_size=64, **SHAPES[shape])
    local = build(cfg).cuda()
    fused = build_model(cfg, fused_kernels=True).cuda()
    layer = fused.decoder.decoder.layers[0]
    assert isinstance(layer.self_attention.linear_qkv, TELayerNormColumnParallelLinear)
    assert fused.config.apply_rope_fusion and fused.config.use_te_activation_func
    generator = torch.Generator().manual_seed(0)
    te_params = dict(fused.named_parameters())
    with torch.no_grad():
        for name, param in local.named_parameters():
            if name.endswith("layernorm.weight"):  # away from the init's ones
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            te_params[te_name(name)].copy_(param)
    assert {te_name(n) for n, _ in local.named_parameters()} == set(te_params)

    tokens = torch.randint(0, 64, (2, 13), generator=generator).cuda()
    results = []
    for model in (local, fused):
        out = model(tokens[:, :-1], jacobi=2)
        loss, _ = model.loss(out, tokens[:, 1:])
        loss.backward()
        results.append((out.logits.detach(), loss.detach(),
                        {te_name(n): p.grad for n, p in model.named_parameters()}))
    (logits_l, loss_l, grads_l), (logits_f, loss_f, grads_f) = results
    assert (logits_l - logits_f).abs().max().item() < LOGITS_ATOL
    assert abs(loss_l.item() - loss_f.item()) < LOGITS_ATOL
    for name, grad in grads_l.items():
        scale = grad.abs().max().clamp(min=1e-8)
        assert ((grad - grads_f[name]).abs().max() / scale).item() < GRAD_RTOL, name
