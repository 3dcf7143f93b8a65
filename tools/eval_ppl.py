#!/usr/bin/env python3
"""Perplexity and inference FLOPs per token of a checkpoint, for several taus in one run.

Example:
    python tools/eval_ppl.py runs/demo --taus 1e-4 1e-2 0.1 0.3 --samples 64 \\
        --output runs/demo/ppl_vs_tau.json

    python tools/eval_ppl.py runs/demo --flops-budget 0.6 0.8   # tau from a FLOPs budget

Scores with the hard pruning rule (the parallel hard-masked forward at ponder.jacobi_eval
Jacobi iterations). Data: the validation split of the checkpoint's data.prefixes, or
--data-prefix (repeatable) with --split. Prints a table; --output writes the rows as JSON.
--flops-budget R: inference FLOPs per token relative to the same model with every latent
step kept; tau is calibrated on --calibration-samples validation sequences that follow the
scored ones (inference/budget.py), printed and stored in each row.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv):
    sys.path.insert(0, str(REPO))  # imports after parsing need it too; this one needs no torch
    # defer: the package until REPO is on sys.path (these helpers import no torch)
    from megatron_ponder.inference.budget_args import add_budget_arguments
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    add_allow_unverified(parser)
    knob = parser.add_mutually_exclusive_group()
    knob.add_argument("--taus", type=float, nargs="+", default=None,
                      help="hard-pruning thresholds (default: the checkpoint's ponder.tau)")
    add_budget_arguments(parser, knob, several=True)
    parser.add_argument("--data-prefix", action="append", default=None,
                        help="indexed dataset PREFIX (default: the checkpoint's data.prefixes)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--samples", type=int, default=32, help="sequences to score")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the sample order (default: the checkpoint's seed; the "
                        "sweeps score every run with 0, so equal seeds give equal tokens)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jacobi", type=int, default=None,
                        help="Jacobi iterations (default: ponder.jacobi_eval)")
    parser.add_argument("--output", default="", help="JSON file for the rows")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from tqdm import tqdm

    from megatron_ponder.config import ConfigError
    from megatron_ponder.inference.budget import score_at_budgets
    from megatron_ponder.inference.heldout import heldout_batches
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.inference.ppl_sweep import format_table, score_at_taus
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_output_file, write_atomically

    try:
        if args.samples < 1 or args.batch_size < 1 or args.calibration_samples < 1:
            raise ConfigError("--samples, --batch-size and --calibration-samples must be >= 1")
        if args.output:
            check_output_file(args.output, "--output")
        model, cfg = load_model(args.checkpoint, allow_unverified=args.allow_unverified)
        if args.data_prefix:
            cfg.data.prefixes, cfg.data.weights = args.data_prefix, []
        seed = cfg.seed if args.data_seed is None else args.data_seed
        batches = heldout_batches(cfg, split=args.split, samples=args.samples,
                                  batch_size=args.batch_size, data_seed=seed)
        if args.flops_budget:
            # Calibration tokens: validation sequences after the scored ones (disjoint).
            start = len(batches) * args.batch_size if args.split == "valid" else 0
            calibration = heldout_batches(cfg, split="valid", samples=args.calibration_samples,
                                          batch_size=args.batch_size, data_seed=seed, start=start)
            rows = score_at_budgets(model, calibration, batches, args.flops_budget, args.jacobi)
            for row in rows:
                print(f"FLOPs budget {row['flops_budget']:g}: tau {row['tau']:.6g} "
                      f"({row['calibration']['ratio']:.4f} on the calibration tokens, "
                      f"{row['flops_vs_all_kept']:.4f} on the scored ones)", file=sys.stderr)
        else:
            taus = args.taus or [model.method.tau]
            with tqdm(total=len(batches) * len(taus), desc="scoring", file=sys.stderr) as bar:
                rows = score_at_taus(model, batches, taus, args.jacobi, progress=bar)
    except (ConfigError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(rows, model))
    if args.output:
        result = {"checkpoint": str(args.checkpoint), "method": cfg.ponder.method,
                  "k": model.method.k, "split": args.split,
                  "sequences": len(batches) * args.batch_size,
                  "seq_length": cfg.data.seq_length, "rows": rows}
        write_atomically(args.output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
