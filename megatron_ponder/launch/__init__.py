"""Helpers for batch launchers (slurm/*.sbatch): check a job before it starts and decide what
a finished attempt means: completed, stopped for requeue, bad input or failed, from the exit
codes each rank recorded (run/exit_codes.py: torchrun reports every failing child as its own
code 1)."""
