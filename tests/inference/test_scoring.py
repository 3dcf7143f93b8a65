"""The hard-masked parallel scoring forward (method.md section 5, prefill / perplexity)."""

import math

import pytest
import torch

from factories import tiny_config
from routers import copy_shared_weights, force_router, random_tokens, randomise_router
from megatron_ponder.config import ConfigError
from megatron_ponder.inference.scoring import hard_forward, score_hard
from megatron_ponder.ponder.flops import DecoderShape

TOL = 2e-5  # float32 max abs on logits of magnitude ~3: reductions in another order


@pytest.mark.parametrize("backend", ["reference", "augmented"])
def test_router_one_hot_zero_scores_like_vanilla(build, backend):
    cfg = tiny_config("ponderlm3", k=3, overrides=[f"ponder.attention_backend={backend}"])
    ponder = build(cfg)
    force_router(ponder, 0)
    vanilla = build(tiny_config("vanilla", k=3))
    copy_shared_weights(ponder, vanilla)
    tokens = random_tokens(cfg.model.vocab_size)
    labels = tokens.roll(-1, dims=1)
    got = hard_forward(ponder, tokens)
    expected = hard_forward(vanilla, tokens)
    assert (got.logits - expected.logits).abs().max().item() < TOL
    score, base = score_hard(ponder, tokens, labels), score_hard(vanilla, tokens, labels)
    assert score.kept_steps.shape == tokens.shape and (score.kept_steps == 0).all()
    assert base.kept_steps is None
    assert score.num_tokens == base.num_tokens == tokens.numel()
    assert abs(score.nll_sum - base.nll_sum) < 1e-4 * base.nll_sum
    shape = DecoderShape.of(cfg.model)
    flops = ponder.method.inference_flops_per_token(shape, tokens.shape[1], score.kept_steps)
    vanilla_flops = vanilla.method.inference_flops_per_token(shape, tokens.shape[1])
    router_flops = 2 * cfg.model.hidden_size * 4
    assert flops == pytest.approx(vanilla_flops + router_flops, rel=1e-12)


def test_router_one_hot_k_scores_like_ponderlm2(build):
    k = 3
    cfg = tiny_config("ponderlm3", k=k)
    ponder = build(cfg)
    force_router(ponder, k)
    baseline = build(tiny_config("ponderlm2", k=k))
    copy_shared_weights(ponder, baseline)
    tokens = random_tokens(cfg.model.vocab_size)
    for jacobi in (1, 3):
        got = hard_forward(ponder, tokens, jacobi=jacobi)
        expected = hard_forward(baseline, tokens, jacobi=jacobi)
        assert (got.logits - expected.logits).abs().max().item() < TOL
    score = score_hard(ponder, tokens, tokens.roll(-1, dims=1))
    assert (score.kept_steps == k).all()


def test_tiny_tau_stays_within_the_pruned_mass_of_the_soft_forward(build):
    """Pruned slots carry w < tau: in attention and in the fusion they moved the soft
    forward by O(tau). The hard forward must differ from the soft one by that much and
    no more, while really pruning (else the comparison proves nothing)."""
    cfg = tiny_config("ponderlm3", k=3)
    model = build(cfg)
    # Step 3 always pruned (w_3 ~ e^-20, logit spread ~1.7), step 2 sometimes (w_2 spread
    # around tau).
    randomise_router(model, scale=0.3, bias=[0.0, 0.0, -9.0, -20.0])
    tokens = random_tokens(cfg.model.vocab_size, length=16)
    tau = 1e-4
    hard = hard_forward(model, tokens, tau=tau)
    model.eval()
    with torch.no_grad():
        soft = model(tokens)
    kept = hard.kept_steps(tau)
    assert (kept < 3).all() and (kept == 2).any() and (kept < 2).any(), kept
    pruned_w = soft.log_w[..., 1:].exp() * (soft.log_w[..., 1:] < math.log(tau))
    mass = pruned_w.sum(-1).max().item()
    assert 0 < mass < 3 * tau
    diff = (torch.log_softmax(hard.logits, -1) - torch.log_softmax(soft.logits, -1)).abs().max().item()
    print(f"pruned mass <= {mass:.2e}, max |log p hard - log p soft| = {diff:.2e}")
    assert diff < 10 * mass  # measured 1.4x: about one unit of log-prob per unit of removed weight
    # A larger tau prunes real mass and moves the log-probs by much more.
    coarse = hard_forward(model, tokens, tau=0.3)
    assert (torch.log_softmax(coarse.logits, -1) - torch.log_softmax(soft.logits, -1)).abs().max() > 1e-2


def test_loss_mask_and_labels(build):
    cfg = tiny_config("ponderlm3", k=2)
    model = build(cfg)
    randomise_router(model)
    tokens = random_tokens(cfg.model.vocab_size, batch=2, length=10)
    labels = tokens.roll(-1, dims=1)
    mask = torch.ones_like(tokens, dtype=torch.float32)
    mask[:, -3:] = 0
    full = score_hard(model, tokens, labels)
    masked = score_hard(model, tokens, labels, mask)
    logp = torch.log_softmax(hard_forward(model, tokens).logits.float(), -1)  # [L, B, V]
    nll = -logp.gather(-1, labels.t()[..., None])[..., 0].t()
    assert masked.num_tokens == 14 and full.num_tokens == 20
    assert masked.nll_sum == pytest.approx((nll * mask).sum().item(), rel=1e-5)
    assert full.nll_sum == pytest.approx(nll.sum().item(), rel=1e-5)
    assert model.training  # restored: scoring must not leave a training model in eval mode


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 2.0, float("nan")])
def test_tau_outside_the_open_unit_interval_is_refused(build, tau):
    cfg = tiny_config("ponderlm3", k=2)
    model = build(cfg)
    tokens = random_tokens(cfg.model.vocab_size, length=4)
    with pytest.raises(ConfigError, match="tau=.*strictly between 0 and 1"):
        score_hard(model, tokens, tokens, tau=tau)


def test_tau_is_checked_once_at_each_entry_point(build, monkeypatch):
    """At the public entry (the Python API here; config validation for the config's tau),
    never again further down the same path."""
    from megatron_ponder.inference import decoding, ppl_sweep, scoring

    checked = []

    def counting(tau):
        checked.append(tau)
        return real(tau)

    real = scoring.check_tau
    monkeypatch.setattr(scoring, "check_tau", counting)  # the one place a caller's tau is checked
    cfg = tiny_config("ponderlm3", k=2)
    model = build(cfg)
    tokens = random_tokens(cfg.model.vocab_size, length=4)
    batch = {"tokens": tokens, "labels": tokens, "loss_mask": torch.ones_like(tokens)}
    calls = [
        lambda: score_hard(model, tokens, tokens, tau=0.1),
        lambda: hard_forward(model, tokens, tau=0.2),
        lambda: ppl_sweep.score_at_taus(model, [batch, batch], [0.3, 0.4]),
        lambda: decoding.SlotDecoder(model, tau=0.5),
        lambda: score_hard(model, tokens, tokens),  # the config's tau: validated with it
        lambda: ppl_sweep.score_at_taus(model, [batch], [None]),
    ]
    for call in calls:
        call()
    assert checked == [0.1, 0.2, 0.3, 0.4, 0.5]
