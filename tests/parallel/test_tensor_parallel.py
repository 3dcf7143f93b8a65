"""Proofs 6 and 7 across ranks: TP 2 (two processes on gloo) reproduces TP 1's loss and
gradients, and every rank draws the same number of Jacobi iterations J."""

import torch

from distributed import run_distributed
from factories import tiny_config
from megatron_ponder.model import build_model
from megatron_ponder.model.tp_shards import full_state, load_full_state
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.parallel.grads import allreduce_tensor_parallel_partial_grads

# (method, attention backend, QKV biases: Qwen2-style, sharded with the QKV weight's rows,
# Qwen3's q/k norms with narrower heads: replicated weights whose gradient each rank has only
# for its own heads, completed by the trainer's TP all-reduce)
CASES = [("ponderlm3", "augmented", False, False), ("ponderlm3", "reference", False, False),
         ("ponderlm1", "augmented", False, False), ("ponderlm2", "augmented", True, False),
         ("ponderlm3", "augmented", False, True)]
STEP = 5  # training step: J is drawn from (seed, STEP) on every rank
LOSS_TOL = 1e-5  # float32: TP changes only the order of a few reductions
GRAD_TOL = 1e-5  # max abs, relative to the largest gradient entry of the tensor


def config(method, backend, qkv_bias, qk_norm, tp):
    qwen3 = ["model.qk_norm=true", "model.head_dim=4"] if qk_norm else []
    return tiny_config(method, k=2, overrides=[
        f"ponder.attention_backend={backend}", f"parallel.tensor_model_parallel_size={tp}",
        f"model.qkv_bias={str(qkv_bias).lower()}", *qwen3])


def randomize_biases(model):
    """Biases start at zero; random ones show a wrong shard in the loss."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") and "router" not in name:
                param.copy_(torch.randn(param.shape, generator=gen))


def loss_and_grads(model, tokens, labels):
    model.train()
    out = model(tokens, step=STEP)
    loss, _ = model.loss(out, labels)
    loss.backward()
    allreduce_tensor_parallel_partial_grads(model)  # as the trainer does (a no-op at TP 1)
    return loss.item(), full_state(model, grads=True)


def tp2_worker(rank, weights, tokens, labels):
    results = {}
    for case in CASES:
        cfg = config(*case, tp=2)
        initialize_parallel(cfg)
        model = build_model(cfg)
        load_full_state(model, weights[case])
        results[case] = loss_and_grads(model, tokens, labels)
    results["jacobi"] = [model.jacobi_for_step(step) for step in range(100)]
    return results


def test_tp2_matches_tp1_loss_gradients_and_jacobi(build):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 64, (2, 10), generator=gen)
    labels = torch.randint(0, 64, (2, 10), generator=gen)
    weights, expected = {}, {}
    for case in CASES:
        model = build(config(*case, tp=1))
        randomize_biases(model)
        weights[case] = full_state(model)
        expected[case] = loss_and_grads(model, tokens, labels)
    ranks = run_distributed(tp2_worker, 2, weights, tokens, labels)

    for case in CASES:
        loss1, grads1 = expected[case]
        for rank in ranks:
            loss2, grads2 = rank[case]
            assert abs(loss2 - loss1) < LOSS_TOL, (case, loss1, loss2)
            assert grads2.keys() == grads1.keys()
            for name, g1 in grads1.items():
                err = (grads2[name] - g1).abs().max().item()
                scale = max(g1.abs().max().item(), 1e-12)
                assert err <= GRAD_TOL * scale, (case, name, err, scale)
        if case[2]:  # the biases exist and take gradients
            assert grads1["decoder.decoder.layers.0.self_attention.linear_qkv.bias"].abs().max() > 1e-6
        # The router's gradient exists and is not zero: the soft mask's backward is tested.
        if case[0] == "ponderlm3":
            assert grads1["decoder.router.net.weight"].abs().max() > 1e-6
        if case[3]:
            assert grads1["decoder.decoder.layers.0.self_attention.q_layernorm.weight"].abs().max() > 1e-6
    # Proof 7: every rank draws the same J as a separate (TP 1) process with the same seed.
    single = [build(config("ponderlm3", "augmented", False, False, tp=1)).jacobi_for_step(s) for s in range(100)]
    assert ranks[0]["jacobi"] == ranks[1]["jacobi"] == single
    assert set(single) == {2, 3}
