#!/usr/bin/env python3
"""Memory per GPU of a recipe's training step: parameters, gradients, optimizer state,
activations, the peak, whether it fits, and the largest micro-batch that does.

Example:
    python tools/plan_memory.py recipes/paper/7b/ponderlm3.yaml --gpus 8 --gpu-memory-gb 80
    python tools/plan_memory.py recipes/paper/410m/ponderlm3.yaml train.recompute=none

The figures are per rank, for the pipeline stage that needs the most, on the GPU code path
(bf16 autocast for precision auto); --cpu plans the CPU path instead (fp32 for auto), the one
tests/memory checks against measurement. Formulas: megatron_ponder/memory/. Exit code 0 if it
fits, 1 if not, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("recipe", help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.recompute=layers")
    parser.add_argument("--gpus", type=int, default=8, help="devices of the job (world size)")
    parser.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory per device, GB")
    parser.add_argument("--cpu", action="store_true", help="plan the CPU code path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_intermixed_args(argv)


def report(plan) -> str:
    gb = lambda value: f"{value / 1e9:8.2f} GB"  # noqa: E731
    lines = [
        f"layout: {plan.gpus} GPUs, data-parallel {plan.data_parallel}, micro-batch "
        f"{plan.micro_batch_size} x {plan.micro_batches_per_step} per step; pipeline stage "
        f"{plan.stage} needs the most",
        f"  parameters          {gb(plan.params)}",
        f"  gradients           {gb(plan.grads)}",
        f"  optimizer state     {gb(plan.optimizer)}",
        f"  activations kept    {gb(plan.activations_kept)}   (largest pass without "
        f"recomputation: {plan.activations_largest_pass / 1e9:.2f} GB)",
        f"  activations + gradients at their largest in the backward {gb(plan.activations_and_grads)}",
        f"  + the larger of: bf16 weight copies {gb(plan.autocast_copies)}, backward working "
        f"set {gb(plan.backward_working)}",
        f"  peak                {gb(plan.peak)}   of {plan.gpu_memory / 1e9:.0f} GB: "
        + ("fits" if plan.fits else "does NOT fit"),
        f"largest micro-batch that fits: {plan.max_micro_batch_size or 'none'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    # defer: torch, only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError, load_config
    from megatron_ponder.memory.plan import plan_memory
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT

    try:
        if args.gpus < 1 or args.gpu_memory_gb <= 0:
            raise ConfigError(f"--gpus={args.gpus} and --gpu-memory-gb={args.gpu_memory_gb} "
                              "must be positive")
        cfg = load_config(args.recipe, args.overrides)
        plan = plan_memory(cfg, args.gpus, args.gpu_memory_gb, cuda=not args.cpu)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(plan.as_dict()) if args.json else report(plan))
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.exit(main())
