"""The command-line options of a FLOPs budget (inference/budget.py), shared by eval_ppl,
generate and export_hf; no torch import, so --help stays fast."""

from __future__ import annotations

RELATIVE_TO = "the same model with every latent step kept"


def add_budget_arguments(parser, knob, several: bool = False, what: str = "tau") -> None:
    """--flops-budget (in `knob`, the group that makes it exclusive with --tau/--taus) and
    --calibration-samples."""
    knob.add_argument("--flops-budget", type=float, nargs="+" if several else None,
                      default=None, metavar="R",
                      help=f"inference FLOPs budget{'s' if several else ''} relative to "
                      f"{RELATIVE_TO}: {what} calibrated on validation data (ponderlm3 only)")
    parser.add_argument("--calibration-samples", type=int, default=64,
                        help="validation sequences to calibrate --flops-budget on")
