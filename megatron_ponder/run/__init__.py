"""A training run's life: its directory layout and the rules for writing next to one
(layout.py), the one-trainer lock (lock.py), stop requests (signals.py), checkpoints written
(checkpoint_write.py), verified (manifest.py) and read (checkpoint_read.py), the processes a
save starts (child_processes.py), and the exit codes, defined once (exit_codes.py).

Nothing is imported here: train.py imports signals.py before anything heavy, and the light
tools (plot_pareto, the sweep CLI) import layout.py without torch."""
