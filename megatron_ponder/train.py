"""`python -m megatron_ponder.train RECIPE.yaml [section.key=value ...]`

Trains (or resumes, from the newest complete checkpoint in train.output_dir) the model a
recipe describes. Exit codes: 0 finished; 3 stopped early by SIGTERM/SIGUSR1, the wall-time
limit or train.exit_interval after saving a checkpoint (run the same command to resume; a
signal during start-up also exits 3, with nothing new to save); 2 bad configuration or
input; 1 anything else (a non-finite loss, a crash).
"""

from __future__ import annotations

# The first lines run as the entry point (`python -m`, torchrun's children): from here on a
# SIGTERM / SIGUSR1 only records itself, before any other import (argparse, torch and
# megatron take seconds under load), and run()'s StopRequest takes it over; so a stop during
# start-up exits 3, not 143. Earlier is the interpreter's own start (README, exit codes).
if __name__ == "__main__":
    import signal

    _EARLY_SIGNALS: list[int] = []
    _BEFORE_US = {sig: signal.signal(sig, lambda signum, frame: _EARLY_SIGNALS.append(signum))
                  for sig in (signal.SIGTERM, signal.SIGUSR1)}

import argparse  # noqa: E402 (after the handlers, on purpose)
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|full scope).*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="megatron")
# torch.distributed.checkpoint's notices about its own API, raised inside megatron's loader.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


def main(argv: list[str] | None = None, stop=None) -> int:
    """stop: a StopRequest installed earlier (run() does); None = the trainer's own."""
    parser = argparse.ArgumentParser(
        prog="python -m megatron_ponder.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/demo_cpu.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100")
    args = parser.parse_args(argv)
    # defer: the package, only after the signal handlers (the start-up window)
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REQUEUE

    def stopped_during_start_up() -> bool:
        if stop is None or not stop.reason:
            return False
        print(f"{stop.reason} during start-up: nothing to save; exit code {EXIT_REQUEUE}: "
              "run the same command again", file=sys.stderr)
        stop.restore()
        return True

    if stopped_during_start_up():  # before the heavy imports: a requeue need not wait for them
        return EXIT_REQUEUE
    # defer: torch and megatron (seconds), only after a stop during start-up was checked
    from megatron_ponder.config import ConfigError, load_config
    from megatron_ponder.data.errors import DataError
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.checkpoint_write import CheckpointSaveError
    from megatron_ponder.training.trainer import Trainer

    if stopped_during_start_up():  # signalled while importing: build nothing
        return EXIT_REQUEUE
    try:
        cfg = load_config(args.recipe, args.overrides)
        trainer = Trainer(cfg, stop)
    except (ConfigError, DataError, CheckpointError) as err:
        # Every rank checks the same config: each prints the error and exits before any
        # rendezvous, so no rank waits for one that already quit.
        print(f"error (rank {os.environ.get('RANK', '0')}): {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return trainer.train()
    except CheckpointSaveError as err:  # a full disk: what happened, not a traceback
        print(f"error (rank {os.environ.get('RANK', '0')}): {err}", file=sys.stderr)
        return EXIT_FAILED


def run() -> int:
    """main(), and the exit code recorded for a batch launcher when it asks for it
    (torchrun reports a child's code 3 as its own 1; see megatron_ponder/launch)."""
    # A light import: SIGTERM / SIGUSR1 from here on set the StopRequest's flag.
    # defer: the package, only after the signal handlers (the start-up window)
    from megatron_ponder.run.signals import StopRequest

    stop = StopRequest()
    if __name__ == "__main__":  # what arrived since the module's first lines counts too
        stop.adopt(_EARLY_SIGNALS, _BEFORE_US)
    from megatron_ponder.run.exit_codes import EXIT_FAILED, record_exit_code  # defer: as above

    code = EXIT_FAILED  # an exception escaping main
    try:
        code = main(stop=stop)
    except SystemExit as err:  # argparse's usage errors
        code = err.code if isinstance(err.code, int) else EXIT_FAILED
        raise
    finally:
        record_exit_code(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
