"""A tiny tokenizer + indexed dataset (built once per session) and tiny run configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factories import tiny_data_files
from megatron_ponder.config import config_from_dict
from tiny_runs import run_dict


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """The first ~300 KB of the embedded corpus, a 512-piece tokenizer, one .bin/.idx."""
    return tiny_data_files(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture
def tiny_run(tiny_data):
    """tiny_run(output_dir, method=..., **train_overrides) -> Config"""
    return lambda output_dir, **kw: config_from_dict(run_dict(tiny_data, Path(output_dir), **kw))


@pytest.fixture
def tiny_recipe(tiny_data):
    """tiny_recipe(path, output_dir, **train_overrides) -> a YAML recipe file for the CLI."""
    def write(path: Path, output_dir: Path, **kw) -> Path:
        path.write_text(yaml.safe_dump(run_dict(tiny_data, Path(output_dir), **kw)))
        return path
    return write
