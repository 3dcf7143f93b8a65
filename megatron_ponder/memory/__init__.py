"""Memory: what a training step keeps per rank (the planner) and how to measure it."""
