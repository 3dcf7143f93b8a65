"""Fixtures shared by the fault tests: the training CLI in process, and a finished run whose
files must survive every bad input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from filesystems import tree_digest


@pytest.fixture
def train_cli(capsys):
    """The command-line entry point, in process: (exit code, stderr)."""
    from megatron_ponder.train import main

    def run(recipe: Path, *overrides: str):
        code = main([str(recipe), *overrides])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    return run


@pytest.fixture
def trained(tiny_run, tmp_path):
    """A finished 3-step run: (output directory, digest of its checkpoints)."""
    from megatron_ponder.run.exit_codes import EXIT_DONE
    from megatron_ponder.training.trainer import Trainer

    out = tmp_path / "run"
    assert Trainer(tiny_run(out, steps=3, save_interval=3)).train() == EXIT_DONE
    return out, tree_digest(out / "checkpoints")


@pytest.fixture(scope="session")
def saved_run(tiny_data, tmp_path_factory) -> Path:
    """A run directory holding one checkpoint (step 3, the tiny model's initial weights and
    a fresh optimizer state), saved without training. Tests must leave it unchanged."""
    from megatron_ponder.config import config_from_dict
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.training.initial_checkpoint import save_training_checkpoint
    from tiny_runs import run_dict

    out = tmp_path_factory.mktemp("saved") / "run"
    cfg = config_from_dict(run_dict(tiny_data, out))
    initialize_parallel(cfg)
    save_training_checkpoint(build_model(cfg), cfg, out / "checkpoints", 3)
    return out


@pytest.fixture(scope="session")
def six_step_run(tiny_data, tmp_path_factory) -> Path:
    """A finished 6-step run with checkpoints (and manifests) at steps 3 and 6. Tests copy
    it before damaging it (damaged_runs.copy_run)."""
    from megatron_ponder.config import config_from_dict
    from megatron_ponder.training.trainer import Trainer
    from tiny_runs import run_dict

    out = tmp_path_factory.mktemp("six_steps") / "run"
    assert Trainer(config_from_dict(run_dict(tiny_data, out, steps=6, save_interval=3))).train() == 0
    return out
