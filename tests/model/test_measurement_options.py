"""The options kept for measurement: truncated gradients through the Jacobi passes and the
cheap latent initialisation. Both change cost, never the converged forward."""

import torch

from factories import tiny_config


def tokens(length=6):
    return torch.randint(0, 64, (2, length), generator=torch.Generator().manual_seed(1))


def test_truncated_gradients_keep_the_forward_and_change_only_gradients(build):
    x = tokens()
    results = {}
    for grad_passes in (0, 1):
        model = build(tiny_config("ponderlm3", k=2, overrides=[f"ponder.grad_passes={grad_passes}"]))
        out = model(x, jacobi=2)
        loss, _ = model.loss(out, x)
        loss.backward()
        results[grad_passes] = (out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (logits_full, grads_full), (logits_cut, grads_cut) = results[0], results[1]
    assert torch.equal(logits_full, logits_cut)  # same weights (same seed), same forward
    name = "decoder.embedding.weight"
    assert torch.isfinite(grads_cut[name]).all()
    assert (grads_full[name] - grads_cut[name]).abs().max() > 1e-6  # earlier passes cut off


def test_copy_initialisation_converges_to_the_same_fixed_point(build):
    x = tokens(length=4)
    slots = 3 * x.shape[1]
    logits = {}
    for init in ("growth", "copy"):
        model = build(tiny_config("ponderlm3", k=2, overrides=[f"ponder.latent_init={init}"])).eval()
        with torch.no_grad():
            out = model(x, jacobi=slots)
        logits[init] = out.logits
        expected = [1, 2] + [3] * (slots + 1) if init == "growth" else [1] + [3] * (slots + 1)
        assert out.pass_slots == expected
    assert (logits["growth"] - logits["copy"]).abs().max() < 2e-5  # float32 tolerance
