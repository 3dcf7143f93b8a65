"""Proofs 1-3: the soft-masked training forward agrees with what inference will compute.

1. Router forced to one-hot(0): PonderLM-3 logits equal the `vanilla` method's.
2. Router forced to one-hot(K): PonderLM-3 logits equal `ponderlm2` with K latent thoughts.
3. Jacobi with J >= the number of slots equals sequential slot-by-slot computation, and
   the residual shrinks geometrically in J.
"""

import math

import pytest
import torch

from factories import tiny_config
from megatron_ponder.ponder.router import log_tail_probs

# A forced router puts -1e4 on every other step: exp(-1e4) is exactly 0 in float32, so
# the soft mask removes those keys and fusion drops those slots without rounding.
FORCE = 1e4
TOL = 2e-5  # float32, max abs on logits of magnitude ~3: reductions in another order


def force_router(model, step):
    router = model.decoder.router.net
    with torch.no_grad():
        router.weight.zero_()
        router.bias.fill_(-FORCE)
        router.bias[step] = 0.0


def copy_shared_weights(src, dst):
    """Load src's decoder weights into dst (a model of another method, same decoder)."""
    state = {k: v for k, v in src.state_dict().items() if "router" not in k}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert not unexpected and all("router" in k or "_extra_state" in k for k in missing)


def tokens_for(cfg, batch=2, length=12, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.model.vocab_size, (batch, length), generator=gen)


@pytest.mark.parametrize("backend", ["reference", "augmented"])
def test_router_one_hot_zero_reproduces_vanilla(build, backend):
    cfg = tiny_config("ponderlm3", k=3, overrides=[f"ponder.attention_backend={backend}"])
    ponder = build(cfg).eval()
    force_router(ponder, 0)
    vanilla = build(tiny_config("vanilla", k=3)).eval()
    copy_shared_weights(ponder, vanilla)
    tokens = tokens_for(cfg)
    with torch.no_grad():
        out = ponder(tokens)
        expected = vanilla(tokens).logits
    assert (out.logits - expected).abs().max().item() < TOL
    assert out.pass_slots == [1, 2, 3, 4, 4, 4, 4]  # the latent passes really ran
    assert (out.log_w[..., 1:] <= -FORCE + math.log(3) + 1e-3).all()  # w_k = (K-k+1) e^-1e4


@pytest.mark.parametrize("backend", ["reference", "augmented"])
def test_router_one_hot_k_reproduces_ponderlm2(build, backend):
    k = 3
    cfg = tiny_config("ponderlm3", k=k, overrides=[f"ponder.attention_backend={backend}"])
    ponder = build(cfg).eval()
    force_router(ponder, k)
    baseline = build(tiny_config("ponderlm2", k=k)).eval()
    copy_shared_weights(ponder, baseline)
    tokens = tokens_for(cfg)
    with torch.no_grad():
        for jacobi in (1, 2, 3):
            got = ponder(tokens, jacobi=jacobi).logits
            expected = baseline(tokens, jacobi=jacobi).logits
            assert (got - expected).abs().max().item() < TOL
    # And the soft mask is not trivially inert: a uniform router changes the logits.
    ponder.decoder.router.net.bias.data.zero_()
    with torch.no_grad():
        assert (ponder(tokens).logits - expected).abs().max().item() > 1e-3


def sequential_logits(model, tokens, adaptive: bool):
    """Slot-by-slot computation in interleaved order, as decoding does: slot (t, k) is run
    only after all earlier slots exist; log w_t comes from h_t^(0) once it is computed."""
    backbone, k = model.decoder, model.cfg.ponder.k
    embeddings = backbone.embed(tokens)  # [L, B, H]
    inputs, positions, biases, fused = [], [], [], []
    zero = torch.zeros(tokens.shape[0])
    log_s = log_w = None  # set from h_t^(0) at each token's first slot
    for t in range(tokens.shape[1]):
        slot_input = embeddings[t]
        outs = []
        for step in range(k + 1):
            inputs.append(slot_input)
            positions.append(t)
            biases.append(log_w[:, step] if adaptive and step > 0 else zero)
            h = backbone.run(torch.stack(inputs), torch.tensor(positions),
                             torch.stack(biases, dim=1) if adaptive else None)[-1]
            outs.append(h)
            if step == 0 and adaptive:
                log_s, log_w = log_tail_probs(backbone.route(h))
            slot_input = h
        if adaptive:
            fused.append(sum(log_s[:, j, None].exp() * outs[j] for j in range(k + 1)))
        else:
            fused.append(outs[k])
    return backbone.lm_logits(torch.stack(fused))


def randomise_router(model, scale=0.5):
    """A non-trivial router, so the soft mask really varies per token and step."""
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        net = model.decoder.router.net
        net.weight.copy_(torch.randn(net.weight.shape, generator=gen) * scale)
        net.bias.copy_(torch.randn(net.bias.shape, generator=gen))


@pytest.mark.parametrize("method", ["ponderlm2", "ponderlm3"])
def test_jacobi_with_enough_iterations_equals_sequential(build, method):
    cfg = tiny_config(method, k=2)
    model = build(cfg).eval()
    if method == "ponderlm3":
        randomise_router(model)
    tokens = tokens_for(cfg, length=5)
    num_slots = (cfg.ponder.k + 1) * tokens.shape[1]
    with torch.no_grad():
        parallel = model(tokens, jacobi=num_slots).logits
        sequential = sequential_logits(model, tokens, adaptive=method == "ponderlm3")
    assert (parallel - sequential).abs().max().item() < TOL


def test_jacobi_residual_shrinks_geometrically(build, record_property):
    cfg = tiny_config("ponderlm3", k=3)
    model = build(cfg).eval()
    randomise_router(model)
    tokens = tokens_for(cfg, length=8)
    with torch.no_grad():
        exact = model(tokens, jacobi=(cfg.ponder.k + 1) * tokens.shape[1]).logits
        residuals = [(model(tokens, jacobi=j).logits - exact).abs().max().item()
                     for j in range(0, 7)]
    # Only the part above float32 noise carries information about contraction.
    informative = [r for r in residuals if r > 1e-5]
    assert len(informative) >= 3, residuals
    ratios = [b / a for a, b in zip(informative, informative[1:])]
    factor = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    record_property("jacobi_contraction_factor", factor)
    print(f"Jacobi residuals {residuals}; mean contraction factor {factor:.3f}")
    assert all(r < 1.0 for r in ratios), ratios  # shrinks at every iteration
    assert factor < 0.7
