"""Inference tests run many tiny matmuls: one thread each, as a shared 2-core machine wants
(two threads were measured 20x slower there under load, spinning on tiny ops)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
