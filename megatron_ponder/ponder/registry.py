"""One switch selects the method; all run on the same decoder. The six methods, by name.

This module and the config's list of valid names are the only places that know method
names; everything else asks the configured `Method` (ponder/method.py) or, for a name with
no run behind it, its class.
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.baselines import Loop, Pause, PonderLM1, Vanilla
from megatron_ponder.ponder.latent_thoughts import PonderLM2, PonderLM3
from megatron_ponder.ponder.method import Method
from megatron_ponder.ponder.program import PonderOutput, run_locally

_REGISTRY: dict[str, type[Method]] = {
    m.name: m for m in (Vanilla, PonderLM1, PonderLM2, Loop, Pause, PonderLM3)}
METHODS = tuple(_REGISTRY)
# The yardstick of inference FLOPs: a plain decoder of the same size (method.md section 6).
VANILLA = Vanilla(k=0)


def names_where(has) -> list[str]:
    """Names of the methods for which has(method class) holds, in registry order."""
    return [name for name, method in _REGISTRY.items() if has(method)]


def method_class(name: str) -> type[Method]:
    """The method called `name`, for the questions a name answers alone (uses_router, ...)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"ponder.method={name!r} is invalid: valid values: "
                         f"{', '.join(METHODS)}") from None


def get_method(settings) -> Method:
    """The method of a run, configured from its config.PonderConfig (duck-typed)."""
    return method_class(settings.method).of(settings)


def method_forward(method: Method, backbone: Backbone, tokens: torch.Tensor,
                   **options) -> PonderOutput:
    """Run `method` on tokens [B, L] with the whole stack in this process (options: see
    Method.program)."""
    return run_locally(method.program(backbone, tokens, **options))
