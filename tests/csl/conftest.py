"""Fixtures of the segmentation tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    # Tiny shapes gain nothing from threads, and on a shared CPU OpenMP's waiting threads slow them many-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
