"""Shared fixtures: a single-process gloo world with megatron's model-parallel groups."""

from __future__ import annotations

import warnings

import pytest

# megatron-core warns at import that apex / Transformer Engine are absent (expected on CPU).
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")


@pytest.fixture(scope="session", autouse=True)
def _single_process_world():
    yield
    from megatron_ponder.parallel import destroy_parallel

    destroy_parallel()


@pytest.fixture
def build():
    """build(cfg) -> PonderLM at TP 1, parallel state (re)initialised and seeded from cfg."""
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel

    def _build(cfg):
        initialize_parallel(cfg)
        return build_model(cfg)

    return _build
