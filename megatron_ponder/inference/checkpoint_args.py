"""The command-line option every tool that reads a trainer checkpoint shares; no torch
import, so --help stays fast."""

from __future__ import annotations


def add_allow_unverified(parser) -> None:
    """--allow-unverified: read a checkpoint without manifest.json (run/checkpoint_read.py
    refuses one otherwise: nothing tells a checkpoint saved before manifests existed from a
    partial copy)."""
    parser.add_argument("--allow-unverified", action="store_true",
                        help="read a checkpoint that has no manifest.json (its files cannot be "
                        "checked) for this run; better: tools/convert_checkpoint.py "
                        "add-manifest STEP_DIR, once, for a checkpoint you trust")
