"""The enumerated settings: each choice is one enum, defined here once and compared by member.

ponder.latent_init and ponder.router are the method's own choices, defined in ponder/
(`LatentInit`, `RouterKind`, plain `StrEnum`s: ponder/ imports nothing of the package) and loaded
the same way. A `Choice` is a `StrEnum`, so a member equals its string (`Precision.BF16 == "bf16"`): code
that sets a field to a plain string (tests, a checkpoint's config) compares the same, and
config_to_dict writes the plain string (recipes, checkpoints and records read as before).
"""

from __future__ import annotations

import enum


class Choice(enum.StrEnum):
    """A setting with a fixed set of values, in the order the error messages list them."""

    def __repr__(self) -> str:
        # Shown as its string, as before there were enums: messages and reprs that print a
        # setting's value (`!r`) read the same.
        return repr(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def valid_values(cls) -> str:
        """What an error for a value outside the choice says is valid."""
        return f"valid values: {', '.join(cls.values())}"


class Precision(Choice):
    """train.precision: "auto" is bf16 autocast on GPU and fp32 on CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"

    @classmethod
    def uses_bf16(cls, precision: str, cuda: bool) -> bool:
        """The forward runs under bf16 autocast (the memory planner and the trainer ask)."""
        return precision == cls.BF16 or (precision == cls.AUTO and cuda)


class Recompute(Choice):
    """train.recompute: which activations the backward recomputes (model/recompute.py)."""

    NONE = "none"
    LAYERS = "layers"  # each layer of each pass keeps only its input
    PASSES = "passes"  # each pass keeps only its block stack's input


class Engine(Choice):
    """parallel.engine: what runs data parallelism (training/engines/)."""

    MEGATRON = "megatron"  # megatron-core DDP + distributed optimizer (or the plain engine)
    DEEPSPEED = "deepspeed"  # DeepSpeed ZeRO, stage parallel.zero_stage


class WandbMode(Choice):
    """logging.wandb: wandb's own mode names."""

    OFFLINE = "offline"
    ONLINE = "online"
    DISABLED = "disabled"

