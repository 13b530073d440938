"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one thread: tiny models run as fast, results do not depend on the machine's
    core count, and a test never competes with itself for the 2 cores CI has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
