#!/usr/bin/env python3
"""Perplexity and inference FLOPs per token of a checkpoint, for several taus in one run.

Example:
    python tools/eval_ppl.py runs/demo --taus 1e-4 1e-2 0.1 0.3 --samples 64 \\
        --output runs/demo/ppl_vs_tau.json

Scores with the hard pruning rule (the parallel hard-masked forward at ponder.jacobi_eval
Jacobi iterations). Data: the validation split of the checkpoint's data.prefixes, or
--data-prefix (repeatable) with --split. Prints a table; --output writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"valid": 1, "test": 2}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    parser.add_argument("--taus", type=float, nargs="+", default=None,
                        help="hard-pruning thresholds (default: the checkpoint's ponder.tau)")
    parser.add_argument("--data-prefix", action="append", default=None,
                        help="indexed dataset PREFIX (default: the checkpoint's data.prefixes)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="valid")
    parser.add_argument("--samples", type=int, default=32, help="sequences to score")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the sample order (default: the checkpoint's seed; the "
                        "sweeps score every run with 0, so equal seeds give equal tokens)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jacobi", type=int, default=None,
                        help="Jacobi iterations (default: ponder.jacobi_eval)")
    parser.add_argument("--output", default="", help="JSON file for the rows")
    return parser.parse_args(argv)


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    from tqdm import tqdm

    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.batches import batch_for_step
    from megatron_ponder.data.datasets import build_datasets
    from megatron_ponder.data.tokenizer import Tokenizer, check_fits
    from megatron_ponder.inference.checkpoint_io import load_model
    from megatron_ponder.inference.ppl_sweep import format_table, sweep_taus
    from megatron_ponder.run_layout import check_output_file
    from megatron_ponder.training.checkpoint import CheckpointError

    try:
        if args.samples < 1 or args.batch_size < 1:
            raise ConfigError("--samples and --batch-size must be >= 1")
        if args.output:
            check_output_file(args.output, "--output")
        model, cfg = load_model(args.checkpoint)
        taus = args.taus or [cfg.ponder.tau]
        if args.data_prefix:
            cfg.data.prefixes, cfg.data.weights = args.data_prefix, []
        tokenizer = Tokenizer.load(cfg.data.tokenizer)
        check_fits(tokenizer, cfg.model.vocab_size)
        samples = [1, 0, 0]
        samples[SPLITS[args.split]] = args.samples
        with tempfile.TemporaryDirectory(prefix="eval_ppl_index_") as cache:
            datasets = build_datasets(cfg.data, vocab_size=tokenizer.vocab_size,
                                      eod_id=tokenizer.eod_id,
                                      seed=cfg.seed if args.data_seed is None else args.data_seed,
                                      num_samples=tuple(samples), cache_dir=cache,
                                      model_vocab_size=cfg.model.vocab_size)
            data = datasets[SPLITS[args.split]]
            if data is None or len(data) == 0:
                raise ConfigError(f"the {args.split} split of {cfg.data.prefixes} is empty "
                                  f"(data.split={cfg.data.split!r})")
            count = min(args.samples, len(data)) // args.batch_size
            batches = [b for i in range(max(count, 1))
                       for b in batch_for_step(data, i, args.batch_size, args.batch_size)]
            with tqdm(total=len(batches) * len(taus), desc="scoring", file=sys.stderr) as bar:
                rows = sweep_taus(model, batches, taus, args.jacobi, progress=bar)
    except (ConfigError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows, cfg.ponder.method))
    if args.output:
        write_json(Path(args.output), {"checkpoint": str(args.checkpoint), "method": cfg.ponder.method,
                                       "k": cfg.ponder.k, "split": args.split,
                                       "sequences": len(batches) * args.batch_size,
                                       "seq_length": cfg.data.seq_length, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
