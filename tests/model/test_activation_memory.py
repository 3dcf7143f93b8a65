"""What the decoder keeps for the backward: the SwiGLU activation keeps only the fc1 output
(with gradients bit for bit those of megatron's MLP), v no longer pins the fused QKV buffer,
and recomputation keeps a fraction of the activations. Measured exactly with
TensorMemoryTracker (bytes of tensor storage alive after the forward)."""

import dataclasses
import gc

import torch

from factories import tiny_config
from megatron_ponder.memory.measure import TensorMemoryTracker
from megatron_ponder.model import ponder_lm


def forward_backward(build, cfg, tokens):
    model = build(cfg)
    model.train()
    with TensorMemoryTracker() as mem:
        loss, _ = model.loss(model(tokens, jacobi=2), tokens)
        gc.collect()
        held = mem.held
        loss.backward()
    return held, {n: p.grad for n, p in model.named_parameters()}


def tokens():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def test_swiglu_gradients_are_megatrons_bit_for_bit_and_keep_less(build, monkeypatch):
    cfg = tiny_config("ponderlm2", 2)
    held, grads = forward_backward(build, cfg, tokens())
    ours = ponder_lm.to_transformer_config
    with monkeypatch.context() as patch:  # megatron's unfused gated MLP
        patch.setattr(ponder_lm, "to_transformer_config", lambda *a: dataclasses.replace(
            ours(*a), use_te_activation_func=False))
        held_megatron, grads_megatron = forward_backward(build, cfg, tokens())
    for name, grad in grads.items():
        assert torch.equal(grad, grads_megatron[name]), name
    # megatron also keeps silu(gate) and up + 0.0: 2 FFN-wide fp32 tensors per slot and layer.
    slots = 2 * 12 * (1 + 2 + 3 + 3 + 3)  # batch x tokens x slots per token (K 2, J 2)
    assert held_megatron - held == 2 * cfg.model.ffn_size * 4 * slots * cfg.model.num_layers


def test_recomputation_keeps_a_fraction_of_the_activations(build):
    held = {mode: forward_backward(build, tiny_config("ponderlm3", 2, [f"train.recompute={mode}"],
                                                      num_layers=4), tokens())[0]
            for mode in ("none", "layers", "passes")}
    assert held["layers"] < held["none"] / 3 and held["passes"] < held["layers"], held
