"""`python -m megatron_ponder.launch preflight|outcome ...`: the batch scripts' helpers.

preflight --nodes N --procs-per-node G RECIPE [overrides]: prints the run's output directory,
  or an error naming what is wrong (exit code 2).
outcome --launcher-rc RC --exit-codes DIR [--stop-requested] [--terminated-before-save]:
  prints one of completed, requeue, bad-input, failed (see megatron_ponder/launch/outcome.py).
"""

from __future__ import annotations

import argparse
import sys

from megatron_ponder.launch.outcome import decide
from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT, read_exit_codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_ponder.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight", help="check a job before launching it")
    pre.add_argument("--nodes", type=int, required=True)
    pre.add_argument("--procs-per-node", type=int, required=True)
    pre.add_argument("recipe")
    pre.add_argument("overrides", nargs="*")
    out = sub.add_parser("outcome", help="classify a finished attempt")
    out.add_argument("--launcher-rc", type=int, required=True)
    out.add_argument("--exit-codes", required=True, help="PONDER_EXIT_CODE_DIR of the attempt")
    out.add_argument("--stop-requested", action="store_true")
    out.add_argument("--terminated-before-save", action="store_true",
                     help="SIGTERM ended the attempt before it completed a checkpoint")
    args = parser.parse_args(argv)

    if args.command == "outcome":
        codes = {rank: r["exit_code"] for rank, r in read_exit_codes(args.exit_codes).items()}
        print(decide(args.launcher_rc, codes, args.stop_requested, args.terminated_before_save))
        return 0
    # The batch script's `outcome` runs after every rank ended: no need to wait for torch.
    # defer: torch (config imports it), only for the preflight subcommand
    from megatron_ponder.config import ConfigError
    from megatron_ponder.launch.preflight import preflight

    try:
        print(preflight(args.recipe, args.overrides, args.nodes, args.procs_per_node))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
