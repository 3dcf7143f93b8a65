"""The decisive-router term (ponder/loss.py): the gradient property it was chosen for."""

import math

import torch

from megatron_ponder.ponder.loss import (
    MARGIN_NATS, decisive_per_token, expected_steps_per_token, ponder_loss,
)
from megatron_ponder.ponder.program import PonderOutput
from megatron_ponder.ponder.registry import method_class
from megatron_ponder.ponder.router import log_tail_probs

TAU, THRESHOLD, MU = 1e-4, 0.05, 0.01


def _logits_with_last_tail(w_last: float, k: int = 3) -> torch.Tensor:
    """Router logits [1, 1, K+1]: step K has probability w_last (= its tail w_K), the
    other steps share the rest equally."""
    rest = (1 - w_last) / k
    return torch.tensor([[[math.log(rest)] * k + [math.log(w_last)]]], dtype=torch.float64)


def _grad_on_log_w(log_w: torch.Tensor) -> torch.Tensor:
    log_w = log_w.clone().requires_grad_()
    (MU * decisive_per_token(log_w, TAU, THRESHOLD).mean()).backward()
    return log_w.grad


def test_gradient_on_log_w_is_constant_in_the_gated_range_and_zero_outside():
    # One token, K = 7 tails spanning the range: above the threshold, inside the gate
    # (3e-2 .. 2e-4), and below the target tau / e.
    w = torch.tensor([1.0, 0.5, 0.06, 3e-2, 1e-2, 1e-3, 2e-4, 1e-5], dtype=torch.float64)
    grad = _grad_on_log_w(w.log().view(1, 1, -1))[0, 0]
    assert grad[0] == 0  # w_0 = 1 is the token's own slot
    assert grad[1] == 0 and grad[2] == 0  # w >= 0.05: the paper's objective alone decides
    # The property: mu per unit of log w, whatever w is (3e-2 and 2e-4 alike; exact).
    assert torch.equal(grad[3:7], torch.full((4,), MU, dtype=torch.float64))
    assert grad[7] == 0  # 1e-5 < tau / e = 3.7e-5: already pruned, not pushed further


def test_value_is_the_gated_hinge():
    w = torch.tensor([1.0, 0.5, 1e-2, 1e-5], dtype=torch.float64)
    value = decisive_per_token(w.log().view(1, 1, -1), TAU, THRESHOLD).item()
    # Only w = 1e-2 counts: log(1e-2) - log(1e-4) + 1 = 4.605 + 1 nats.
    assert math.isclose(value, math.log(1e-2 / 1e-4) + MARGIN_NATS, rel_tol=1e-12)


def test_push_on_a_small_tail_logit_does_not_vanish_unlike_the_lambda_penalty():
    """d/dz_K of each term, for the last tail w_K = s_K at 1e-2, 1e-3 and 3e-4 (only w_K is
    below the gate): the lambda penalty's gradient is lambda s_K (K - E[steps]) and falls 33x
    over this range; the decisive term's is mu (1 - s_K), within 1% of mu throughout."""
    penalty, decisive = [], []
    for w_last in (1e-2, 1e-3, 3e-4):
        for term, out in ((lambda lw: MU * lw[..., 1:].exp().sum(), penalty),
                          (lambda lw: MU * decisive_per_token(lw, TAU, THRESHOLD).sum(), decisive)):
            z = _logits_with_last_tail(w_last).requires_grad_()
            term(log_tail_probs(z)[1]).backward()
            out.append(z.grad[0, 0, -1].item())
    assert all(math.isclose(g, MU, rel_tol=0.011) for g in decisive)
    rest = (1 - 1e-2) / 3
    expected_steps = (2 * rest + 1e-2) + (rest + 1e-2) + 1e-2  # w_1 + w_2 + w_3
    assert math.isclose(penalty[0], MU * 1e-2 * (3 - expected_steps), rel_tol=1e-6)
    assert penalty[0] / penalty[2] > 30


def test_gradient_descent_crosses_tau_with_the_decisive_term_only():
    """Plain gradient descent (lr 10) on the router logits from w_K = 1e-2: in 300 steps
    the decisive term takes the tail below tau; the lambda penalty (same weight, pushing every
    tail) leaves it at ~9e-4, 9x above tau, its push shrinking with the tail."""
    finals = {}
    for name, term in (("penalty", lambda lw: MU * lw[..., 1:].exp().sum()),
                       ("decisive", lambda lw: MU * decisive_per_token(lw, TAU, THRESHOLD).sum())):
        z = _logits_with_last_tail(1e-2).requires_grad_()
        for _ in range(300):
            z.grad = None
            term(log_tail_probs(z)[1]).backward()
            with torch.no_grad():
                z -= 10.0 * z.grad
        finals[name] = log_tail_probs(z)[1][0, 0, -1].exp().item()
    assert finals["decisive"] < TAU
    assert finals["penalty"] > 5 * TAU


def test_ponder_loss_adds_the_term_to_the_objective_and_reports_it_apart():
    torch.manual_seed(0)
    log_s, log_w = log_tail_probs(torch.randn(6, 2, 4) * 4)
    logits = torch.randn(6, 2, 11)
    labels = torch.randint(0, 11, (2, 6))
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0

    class Head:
        @staticmethod
        def cross_entropy(logits, labels):
            return torch.nn.functional.cross_entropy(logits.permute(1, 2, 0), labels,
                                                     reduction="none")

    output = PonderOutput(logits, [1], log_s, log_w)
    plain, parts0 = ponder_loss(Head, output, labels, mask)
    both, parts = ponder_loss(Head, output, labels, mask, compute_penalty=0.02,
                              decisive_weight=MU, decisive_threshold=THRESHOLD, tau=TAU)
    off, parts_off = ponder_loss(Head, output, labels, mask, decisive_weight=0.0,
                                 decisive_threshold=THRESHOLD, tau=TAU)
    n = mask.sum()
    want = (0.02 * (expected_steps_per_token(log_w) * mask).sum() / n
            + MU * (decisive_per_token(log_w, TAU, THRESHOLD) * mask).sum() / n)
    assert want > 0
    assert torch.allclose(both - plain, want, rtol=0, atol=1e-6)  # float32 sums of ~2.5
    assert torch.allclose(parts["penalty"], want, rtol=1e-6)
    assert torch.equal(parts["lm_loss"], parts0["lm_loss"])
    assert "penalty" not in parts0 and "penalty" not in parts_off and torch.equal(off, plain)
    # The configured method hands its own settings to the loss, each under its name.
    method = method_class("ponderlm3")(k=log_w.shape[-1] - 1, compute_penalty=0.02,
                                       decisive_weight=MU, decisive_threshold=THRESHOLD, tau=TAU)
    configured, configured_parts = method.loss(Head, output, labels, mask)
    assert torch.equal(configured, both) and torch.equal(configured_parts["penalty"], parts["penalty"])


def test_off_by_default():
    from megatron_ponder.config import PonderConfig

    assert PonderConfig().decisive_weight == 0.0
