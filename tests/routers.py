"""Router settings for inference tests: forced one-hot, or random but reproducible."""

from __future__ import annotations

import torch

# exp(-1e4) is exactly 0 in float32: a forced router gives the other steps zero weight.
FORCE = 1e4


def force_router(model, step: int) -> None:
    """s_t = one-hot(step) for every token."""
    net = model.decoder.router.net
    with torch.no_grad():
        net.weight.zero_()
        net.bias.fill_(-FORCE)
        net.bias[step] = 0.0


def randomise_router(model, scale: float = 1.0, bias: list[float] | None = None, seed: int = 0):
    """A router whose decisions vary per token; `bias` shifts the steps' logits."""
    net = model.decoder.router.net
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.weight.copy_(torch.randn(net.weight.shape, generator=gen) * scale)
        net.bias.copy_(torch.tensor(bias) if bias is not None
                       else torch.randn(net.bias.shape, generator=gen))


def copy_shared_weights(src, dst) -> None:
    """src's decoder weights into dst, a model of another method with the same decoder."""
    state = {k: v for k, v in src.state_dict().items() if "router" not in k}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert not unexpected and all("router" in k or "_extra_state" in k for k in missing)


def random_tokens(vocab: int, batch: int = 2, length: int = 12, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)
