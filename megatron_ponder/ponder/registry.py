"""One switch selects the method; all run on the same decoder."""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.latent import latent_thoughts_forward
from megatron_ponder.ponder.methods import (
    loop_forward, pause_forward, ponderlm1_forward, vanilla_forward,
)
from megatron_ponder.ponder.output import PonderOutput

METHODS = ("vanilla", "ponderlm1", "ponderlm2", "loop", "pause", "ponderlm3")
# Methods whose decoder owns extra parameters.
USES_ROUTER = frozenset({"ponderlm3"})
USES_PAUSE = frozenset({"pause"})
USES_JACOBI = frozenset({"ponderlm2", "ponderlm3"})


def method_forward(
    method: str,
    backbone: Backbone,
    tokens: torch.Tensor,
    *,
    k: int,
    jacobi: int = 3,
    latent_init: str = "growth",
    grad_passes: int = 0,
    hard_tau: float | None = None,
) -> PonderOutput:
    """Run `method` on tokens [B, L]; `jacobi` is used by the latent-thought methods.
    hard_tau: PonderLM-3's hard pruning rule (inference); the fixed-step methods ignore it."""
    if method == "vanilla":
        return vanilla_forward(backbone, tokens)
    if method == "ponderlm1":
        return ponderlm1_forward(backbone, tokens, k)
    if method == "loop":
        return loop_forward(backbone, tokens, k)
    if method == "pause":
        return pause_forward(backbone, tokens, k)
    if method in ("ponderlm2", "ponderlm3"):
        return latent_thoughts_forward(
            backbone, tokens, k=k, jacobi=jacobi, adaptive=method == "ponderlm3",
            latent_init=latent_init, grad_passes=grad_passes,
            hard_tau=hard_tau if method == "ponderlm3" else None,
        )
    raise ValueError(f"ponder.method={method!r} is invalid: valid values: {', '.join(METHODS)}")
