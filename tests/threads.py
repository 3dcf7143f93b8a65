"""One torch thread per test where the work is many tiny matmuls: on a shared 2-core machine
two threads were measured 20x slower under load, spinning on tiny ops."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
