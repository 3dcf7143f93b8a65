"""The error every config check raises, and the one way checks raise it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# A seed reaches numpy's RandomState (megatron's dataset shuffles), which takes 32 bits.
MAX_SEED = 2**32 - 1
# About 31 years: any longer overflows the timedelta that torch.distributed takes.
MAX_TIMEOUT_S = 1e9


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the valid values."""


def require(ok: bool, name: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {valid}")


def non_finite_floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted name, value) of every inf or NaN float anywhere in the config: no float
    setting means anything infinite, and a NaN passes every `>` check."""
    found = []
    for f in dataclasses.fields(node):
        value, name = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found += non_finite_floats(value, name + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((name, value))
        elif isinstance(value, list):
            found += [(f"{name}[{i}]", v) for i, v in enumerate(value)
                      if isinstance(v, float) and not math.isfinite(v)]
    return found
