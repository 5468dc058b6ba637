"""Fixtures of the reference tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Run single-threaded: these tests issue many small ops, and on a busy 2-core machine
    OpenMP barriers rather than arithmetic dominate their time. Results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
