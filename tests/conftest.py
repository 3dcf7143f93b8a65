"""Shared fixtures: a single-process gloo world with megatron's model-parallel groups, and
a tiny tokenizer + indexed dataset (built once per session) with tiny run configs."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

# megatron-core warns at import that apex / Transformer Engine are absent (expected on CPU).
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")


@pytest.fixture(scope="session", autouse=True)
def _single_process_world():
    yield
    from megatron_ponder.parallel import destroy_parallel

    destroy_parallel()


@pytest.fixture
def build():
    """build(cfg) -> PonderLM at TP 1, parallel state (re)initialised and seeded from cfg,
    with train.recompute and train.compile applied as the trainer applies them."""
    from megatron_ponder.model import build_model
    from megatron_ponder.model.transforms import apply_transforms
    from megatron_ponder.parallel import initialize_parallel

    def _build(cfg):
        initialize_parallel(cfg)
        return apply_transforms(build_model(cfg), cfg.train)

    return _build


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """The first ~300 KB of the embedded corpus, a 512-piece tokenizer, one .bin/.idx."""
    from factories import tiny_data_files

    return tiny_data_files(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture
def tiny_run(tiny_data):
    """tiny_run(output_dir, method=..., **train_overrides) -> Config"""
    from megatron_ponder.config import config_from_dict
    from tiny_runs import run_dict

    return lambda output_dir, **kw: config_from_dict(run_dict(tiny_data, Path(output_dir), **kw))


@pytest.fixture
def tiny_recipe(tiny_data):
    """tiny_recipe(path, output_dir, **train_overrides) -> a YAML recipe file for the CLI."""
    from tiny_runs import run_dict

    def write(path: Path, output_dir: Path, **kw) -> Path:
        path.write_text(yaml.safe_dump(run_dict(tiny_data, Path(output_dir), **kw)))
        return path
    return write
