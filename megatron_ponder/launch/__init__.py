"""Helpers for batch launchers (slurm/*.sbatch): check a job before it starts, record each
rank's exit code (torchrun reports every failing child as its own code 1) and decide what a
finished attempt means: completed, stopped for requeue, bad input or failed."""
