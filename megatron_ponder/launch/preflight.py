"""Checks a batch job runs before it starts any process: the recipe loads, the job's process
count fits the recipe's parallel layout, and the output directory is writable and not in use
by another trainer. Each failure
is a ConfigError naming the file, field or count and what would be valid."""

from __future__ import annotations

import os
from pathlib import Path

from megatron_ponder.config import Config, ConfigError, load_config
from megatron_ponder.parallel.layout import check_layout
from megatron_ponder.run.lock import RunLock


def check_job_layout(cfg: Config, nodes: int, procs_per_node: int) -> None:
    """The trainer's own layout check (TP x PP divides the world, batch sizes fit the
    data-parallel size), told this job's node and process counts."""
    try:
        check_layout(cfg, nodes * procs_per_node)
    except ConfigError as err:
        raise ConfigError(f"this job runs {nodes} node(s) x {procs_per_node} process(es) per "
                          f"node (sbatch --nodes / --gpus-per-node, or PONDER_NPROC_PER_NODE): "
                          f"{err}") from None


def check_writable(output_dir: Path) -> None:
    probe = output_dir / f".preflight-{os.getpid()}"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"train.output_dir={str(output_dir)!r} is not writable: {err}") from None


def preflight(recipe: str, overrides: list[str], nodes: int, procs_per_node: int) -> Path:
    """The run's absolute output directory, once every check has passed."""
    cfg = load_config(recipe, overrides)
    check_job_layout(cfg, nodes, procs_per_node)
    output_dir = Path(cfg.train.output_dir).resolve()
    check_writable(output_dir)
    RunLock(output_dir).check_free()  # another job training into it: refuse now, exit 2
    return output_dir
