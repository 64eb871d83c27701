"""The compression tests run thousands of tiny ops: one intra-op thread avoids thread hand-off costs that
dominate (and swing wildly on a busy machine) at these sizes. The previous setting is restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_intra_op_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
