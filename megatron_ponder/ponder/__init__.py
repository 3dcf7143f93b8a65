"""The pondering method itself, in plain PyTorch (no megatron import).

Everything here talks to the network through the small `Backbone` protocol, so the method
can be tested without megatron, process groups or data files. Files: method.py (what a
configured method answers), baselines.py and latent_thoughts.py (each method with its pass
program), program.py (passes, slots, output), registry.py (names), router.py, loss.py,
flops.py, backbone.py.
"""

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.latent_thoughts import LatentInit
from megatron_ponder.ponder.loss import ponder_loss
from megatron_ponder.ponder.method import Method, TokenPlan, jacobi_iterations
from megatron_ponder.ponder.program import PassProgram, PonderOutput, run_locally
from megatron_ponder.ponder.registry import (
    METHODS, VANILLA, get_method, method_class, method_forward, names_where,
)
from megatron_ponder.ponder.router import Router, RouterKind, log_tail_probs

__all__ = [
    "Backbone", "DecoderShape", "LatentInit", "METHODS", "Method", "PassProgram", "PonderOutput",
    "Router", "RouterKind", "TokenPlan", "VANILLA", "get_method", "jacobi_iterations",
    "log_tail_probs", "method_class", "method_forward", "names_where", "ponder_loss",
    "run_locally",
]
