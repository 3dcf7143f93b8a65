"""The pondering method itself, in plain PyTorch (no megatron import).

Everything here talks to the network through the small `Backbone` protocol, so the method
can be tested without megatron, process groups or data files.
"""

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.loss import ponder_loss
from megatron_ponder.ponder.output import PonderOutput
from megatron_ponder.ponder.program import PassProgram, run_locally
from megatron_ponder.ponder.registry import METHODS, build_program, method_forward
from megatron_ponder.ponder.router import Router, log_tail_probs
from megatron_ponder.ponder.schedule import jacobi_iterations

__all__ = [
    "Backbone", "METHODS", "PassProgram", "PonderOutput", "Router", "build_program",
    "jacobi_iterations", "log_tail_probs", "method_forward", "ponder_loss", "run_locally",
]
