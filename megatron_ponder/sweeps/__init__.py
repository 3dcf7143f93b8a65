"""Scaling-law sweeps: sweep files, the runner, run records and the Pareto analysis."""
