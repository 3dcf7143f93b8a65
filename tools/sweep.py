#!/usr/bin/env python3
"""Run a scaling-law sweep: a YAML grid (model size, method, K, lambda, seeds) of training
runs, each evaluated at several hard-pruning thresholds tau into one JSON record.

    python tools/sweep.py list   recipes/sweeps/pareto-cpu.yaml
    python tools/sweep.py run    recipes/sweeps/pareto-cpu.yaml             # all, one by one
    python tools/sweep.py run    recipes/sweeps/pareto-cpu.yaml --index 3   # one (Slurm task)
    python tools/sweep.py run    recipes/sweeps/pareto-cpu.yaml --submit    # Slurm array

Resuming: a run whose record exists is skipped, a trained run is only evaluated, a half-
trained run continues from its newest checkpoint. Records land in
<output_dir>/records/<run_id>.json; plot them with tools/plot_pareto.py. The sweep file
format is described in megatron_ponder/sweeps/spec.py and recipes/sweeps/.
Exit codes: 0 done; 2 bad sweep file or input; 3 a run stopped early (run again to resume);
1 a run failed.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="one line per configuration: index, run id, status")
    listing.add_argument("sweep", help="sweep YAML file")
    run = sub.add_parser("run", help="train + evaluate configurations (or submit them)")
    run.add_argument("sweep", help="sweep YAML file")
    run.add_argument("--index", type=int, action="append",
                     help="run only this configuration (repeatable, run in the order given); "
                          "default: all, in order")
    run.add_argument("--submit", action="store_true",
                     help="submit the whole sweep as `sbatch --array=0-(N-1) SBATCH SWEEP`")
    run.add_argument("--sbatch-script", default="slurm/sweep.sbatch",
                     help="batch script for --submit (default: slurm/sweep.sbatch)")
    run.add_argument("--dry-run", action="store_true", help="with --submit: print, do not submit")
    run.add_argument("--train-only", action="store_true",
                     help="train every selected run, write no records (evaluate later)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads of training (OMP_NUM_THREADS) and evaluation")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|full scope).*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="megatron")
    # torch.distributed.checkpoint's notices about its own API, raised inside megatron's loader.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")
    sys.path.insert(0, str(REPO))  # imported after parsing: --help needs no torch
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    import torch
    from megatron_ponder.config import ConfigError
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REQUEUE
    from megatron_ponder.run.layout import check_output_dir
    from megatron_ponder.sweeps import runner
    from megatron_ponder.sweeps.prepare import prepare_data
    from megatron_ponder.sweeps.records import RecordError
    from megatron_ponder.sweeps.spec import SweepError, load_sweep

    try:
        sweep = load_sweep(args.sweep)
        if args.command == "list":
            for run in sweep.runs:
                print(f"{run.index:4d}  {run.run_id:<40s}  {runner.status(sweep, run)}")
            return 0
        check_output_dir(sweep.output_dir, f"{args.sweep}: output_dir")
        bad = [i for i in args.index or [] if not 0 <= i < len(sweep.runs)]
        if bad:
            raise SweepError(f"--index {bad[0]} is out of range: {args.sweep} has "
                             f"{len(sweep.runs)} configurations (0-{len(sweep.runs) - 1})")
        if args.submit:
            command = runner.submit_command(args.sweep, len(sweep.runs), args.sbatch_script)
            print(shlex.join(command))
            if args.dry_run:
                return 0
        if sweep.prepare is not None:  # before submitting: array tasks then find the data
            prepare_data(sweep.prepare, sweep.runs[0].config)
        if args.submit:
            return subprocess.call(command)
        if args.threads:  # the evaluation phase runs in this process
            torch.set_num_threads(args.threads)
        indices = args.index if args.index is not None else list(range(len(sweep.runs)))
        runner.run_sweep(sweep, indices, threads=args.threads, train_only=args.train_only)
        return 0
    except (SweepError, ConfigError, RecordError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except runner.RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code if err.code == EXIT_REQUEUE else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
