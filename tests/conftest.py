"""Shared fixtures: a single-process gloo world with megatron's model-parallel groups."""

from __future__ import annotations

import os
import socket
import warnings

import pytest

# megatron-core warns at import that apex / Transformer Engine are absent (expected on CPU).
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _single_process_world():
    os.environ.setdefault("MASTER_PORT", str(free_port()))
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
