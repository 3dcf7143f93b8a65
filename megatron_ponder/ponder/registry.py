"""One switch selects the method; all run on the same decoder."""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.latent import LatentThoughtsProgram
from megatron_ponder.ponder.methods import (
    LoopProgram, PauseProgram, PonderLM1Program, VanillaProgram,
)
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.program import PassProgram, run_locally

METHODS = ("vanilla", "ponderlm1", "ponderlm2", "loop", "pause", "ponderlm3")
# Methods whose decoder owns extra parameters.
USES_ROUTER = frozenset({"ponderlm3"})
USES_PAUSE = frozenset({"pause"})
USES_JACOBI = frozenset({"ponderlm2", "ponderlm3"})


def build_program(
    method: str,
    backbone: Backbone,
    tokens: torch.Tensor,
    *,
    k: int,
    jacobi: int = 3,
    latent_init: str = "growth",
    grad_passes: int = 0,
    hard_tau: float | None = None,
) -> PassProgram:
    """The pass program of `method` on tokens [B, L]; `jacobi` is used by the latent-thought
    methods. hard_tau: PonderLM-3's hard pruning rule (inference); the fixed-step methods
    ignore it."""
    if method == "vanilla":
        return VanillaProgram(backbone, tokens)
    if method == "ponderlm1":
        return PonderLM1Program(backbone, tokens, k)
    if method == "loop":
        return LoopProgram(backbone, tokens, k)
    if method == "pause":
        return PauseProgram(backbone, tokens, k)
    if method in ("ponderlm2", "ponderlm3"):
        return LatentThoughtsProgram(
            backbone, tokens, k=k, jacobi=jacobi, adaptive=method == "ponderlm3",
            latent_init=latent_init, grad_passes=grad_passes,
            hard_tau=hard_tau if method == "ponderlm3" else None,
        )
    raise ValueError(f"ponder.method={method!r} is invalid: valid values: {', '.join(METHODS)}")


def method_forward(method: str, backbone: Backbone, tokens: torch.Tensor, **options) -> PonderOutput:
    """Run `method` on tokens [B, L] with the whole stack in this process."""
    return run_locally(build_program(method, backbone, tokens, **options))
