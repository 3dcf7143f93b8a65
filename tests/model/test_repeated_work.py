"""Work the pass schedule used to repeat although its result could not change.

The token embeddings are the same in every pass (ponder/program.py token_embeddings): one
lookup and one embedding backward per step instead of one per pass. The forward must stay
bitwise the same, every gradient but the embedding's bitwise the same, and the embedding's
equal up to the order in which the passes' contributions are summed (float32).
"""

import pytest
import torch

from factories import tiny_config
from megatron_ponder.ponder.program import run_locally
from megatron_ponder.ponder.registry import METHODS

EMBEDDING = "decoder.embedding.weight"
# float32: the embedding gradient sums the same per-pass terms in another order.
EMBEDDING_GRAD_RTOL = 1e-5


def tokens(length=8):
    return torch.randint(0, 64, (2, length), generator=torch.Generator().manual_seed(2))


def forward_backward(model, x, reuse: bool, lookups: list):
    program = model.program(x[:, :-1], jacobi=2)
    program.reuse_embeddings = reuse
    embed = program.backbone.embed

    def counted(tokens):
        lookups.append(torch.is_grad_enabled())
        return embed(tokens)

    program.backbone.embed = counted  # this decoder instance only
    try:
        out = run_locally(program)
    finally:
        del program.backbone.embed
    loss, _ = model.loss(out, x[:, 1:])
    model.zero_grad(set_to_none=True)
    loss.backward()
    return out.logits.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                if p.grad is not None}


@pytest.mark.parametrize("method,grad_passes", [(m, 0) for m in METHODS] + [("ponderlm3", 2)])
def test_one_embedding_lookup_per_step_same_loss_and_gradients(build, method, grad_passes):
    model = build(tiny_config(method, k=2, overrides=[f"ponder.grad_passes={grad_passes}"])).train()
    x = tokens()
    per_pass, once = [], []
    logits_a, loss_a, grads_a = forward_backward(model, x, reuse=False, lookups=per_pass)
    logits_b, loss_b, grads_b = forward_backward(model, x, reuse=True, lookups=once)
    # Before: one lookup per pass that reads the tokens (all of them but Loop's later ones).
    # Now: one per grad mode (a truncated schedule's passes without autograd, then the rest).
    assert sorted(once) == sorted(set(per_pass))
    assert torch.equal(logits_a, logits_b) and torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and EMBEDDING in grads_b
    for name in grads_a:
        if name == EMBEDDING:
            scale = grads_a[name].abs().max()
            assert (grads_a[name] - grads_b[name]).abs().max() <= EMBEDDING_GRAD_RTOL * scale
        else:
            assert torch.equal(grads_a[name], grads_b[name]), name
