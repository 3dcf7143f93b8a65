"""Checks a batch job runs before it starts any process: the recipe loads, the job's process
count fits the recipe's parallel layout, and the output directory is writable. Each failure
is a ConfigError naming the file, field or count and what would be valid."""

from __future__ import annotations

import os
from pathlib import Path

from megatron_ponder.config import Config, ConfigError, load_config


def model_parallel_size(cfg: Config) -> tuple[int, int]:
    """(tensor, pipeline) sizes; recipes without a pipeline field have one stage."""
    return (cfg.parallel.tensor_model_parallel_size,
            getattr(cfg.parallel, "pipeline_model_parallel_size", 1))


def check_layout(cfg: Config, nodes: int, procs_per_node: int) -> None:
    tp, pp = model_parallel_size(cfg)
    world = nodes * procs_per_node
    if world % (tp * pp):
        raise ConfigError(
            f"the job has {world} processes ({nodes} node(s) x {procs_per_node} per node), but "
            f"parallel.tensor_model_parallel_size={tp} x parallel.pipeline_model_parallel_size="
            f"{pp} = {tp * pp} does not divide it: request a multiple of {tp * pp} processes "
            f"(sbatch --nodes / --gpus-per-node, or PONDER_NPROC_PER_NODE) or change the layout")


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
    check_layout(cfg, nodes, procs_per_node)
    output_dir = Path(cfg.train.output_dir).resolve()
    check_writable(output_dir)
    return output_dir
