"""Shared fixtures."""
import pytest


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (2-core CI machine)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
