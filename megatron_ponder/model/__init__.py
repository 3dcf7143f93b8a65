"""The decoder on megatron-core; knows nothing about training loops."""

from megatron_ponder.model.build import build_model
from megatron_ponder.model.ponder_lm import PonderLM

__all__ = ["PonderLM", "build_model"]
