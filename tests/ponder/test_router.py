"""Proof 5: the tail probabilities log w behind the soft mask."""

import pytest
import torch

from factories import tiny_config
from megatron_ponder.ponder.router import Router, log_tail_probs


def test_w0_is_exactly_one_and_tail_non_increasing():
    torch.manual_seed(0)
    logits = torch.randn(64, 3, 6) * 5
    log_s, log_w = log_tail_probs(logits)
    assert torch.equal(log_w[..., 0], torch.zeros_like(log_w[..., 0]))  # w_0 = 1 exactly
    assert (log_w[..., 1:] <= log_w[..., :-1]).all()
    # Against a float64 reference of w_k = sum_{j>=k} s_j (tolerance 1e-6 absolute on w).
    s64 = torch.softmax(logits.double(), -1)
    w64 = s64.flip(-1).cumsum(-1).flip(-1)
    assert (log_w.exp().double() - w64).abs().max() < 1e-6
    assert (log_s.exp().double() - s64).abs().max() < 1e-6


def test_finite_gradients_when_probabilities_underflow():
    # exp(-200) and exp(-300) underflow to 0 in float32: a log of a clamped probability would
    # give -inf / nan gradients; the reverse logsumexp must stay finite.
    logits = torch.tensor([[40.0, -200.0, -300.0, 0.0], [0.0, 0.0, -120.0, -130.0]],
                          requires_grad=True)
    log_s, log_w = log_tail_probs(logits)
    assert torch.isfinite(log_w).all()
    assert log_s.exp()[1, 2] == 0  # s_2 underflows in float32 ...
    # ... yet its tail keeps its exact log value: log(e^-120 + e^-130) - log 2.
    expected = torch.logaddexp(torch.tensor(-120.0, dtype=torch.float64),
                               torch.tensor(-130.0, dtype=torch.float64)) - torch.log(torch.tensor(2.0, dtype=torch.float64))
    assert abs(log_w[1, 2].double() - expected) < 1e-4
    (log_w * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    # The gradient matches float64 autograd of the same formula (tolerance 1e-4: float32
    # carries log w of magnitude ~120 to about 1e-5).
    ref = logits.detach().double().requires_grad_()
    ls = torch.log_softmax(ref, -1)
    lw = torch.logcumsumexp(ls.flip(-1), -1).flip(-1)
    lw = torch.cat([torch.zeros_like(lw[..., :1]), lw[..., 1:]], -1)
    (lw * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    assert (logits.grad.double() - ref.grad).abs().max() < 1e-4


def test_router_starts_uniform():
    router = Router(hidden_size=8, k=3)
    log_s, log_w = log_tail_probs(router(torch.randn(5, 2, 8)))
    assert torch.allclose(log_s.exp(), torch.full_like(log_s, 0.25), atol=1e-7)
    assert torch.allclose(log_w.exp()[0, 0], torch.tensor([1.0, 0.75, 0.5, 0.25]), atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_models_own_initialisation_starts_the_router_uniform(build, kind):
    # Through build_model: initialize_parameters redraws every parameter after Router's own
    # init, so the zero output layer must survive it.
    cfg = tiny_config("ponderlm3", k=3, overrides=[f"ponder.router={kind}"])
    model = build(cfg).eval()
    net = model.decoder.router.net
    last = net if kind == "linear" else net[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    if kind == "mlp":  # the hidden layer is drawn like every matrix (std within 20%)
        assert abs(net[0].weight.std().item() / cfg.model.std - 1) < 0.2
        assert torch.count_nonzero(net[0].bias) == 0
    tokens = torch.randint(0, cfg.model.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(tokens)
    assert torch.allclose(out.log_s.exp(), torch.full_like(out.log_s, 0.25), atol=1e-6)
    assert torch.allclose(out.log_w.exp(), torch.tensor([1.0, 0.75, 0.5, 0.25]).expand_as(out.log_w),
                          atol=1e-6)
