"""Activation memory by the paper's protocol, measured from what autograd actually keeps.

The paper reads CUDA memory after one training-mode forward and subtracts model, data, loss and output. The
same quantity, device-independently: every tensor autograd saves during the forward (seen through
``saved_tensors_hooks``), deduplicated by storage, minus parameters, graph data and the output. The paper's
figure also includes the train-index tensor that the loss keeps for its backward (90,941 x int64 on arxiv =
0.69 MiB of the 786.22), so it is added explicitly. Memory is shape-determined, so a graph with arxiv's shape
reproduces Table 4's memory column on any device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    if t.layout != torch.strided:
        return None  # sparse adjacency: graph data, never an activation
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


@dataclass
class SavedTensorLedger:
    storages: dict[tuple[int, int], torch.dtype] = field(default_factory=dict)

    def add(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if key is not None and key[1] > 0:
            self.storages.setdefault(key, t.dtype)

    def bytes_excluding(self, tensors: Iterable[torch.Tensor]) -> int:
        excluded = {k for k in (_storage_key(t) for t in tensors) if k is not None}
        return sum(nbytes for (ptr, nbytes) in self.storages if (ptr, nbytes) not in excluded)


@contextmanager
def record_saved_tensors() -> Iterator[SavedTensorLedger]:
    ledger = SavedTensorLedger()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ledger.add(t)
        # Not t itself: a saved output returned as is keeps its own grad_fn alive (a reference cycle through C++
        # that the garbage collector cannot see), so every measured forward would leak all of its activations.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield ledger


def activation_bytes(ledger: SavedTensorLedger, *, params: Iterable[torch.Tensor], data: Iterable[torch.Tensor],
                     output: torch.Tensor, train_idx: torch.Tensor) -> int:
    """Bytes of saved activations (paper protocol) from a ledger recorded around one training forward."""
    saved = ledger.bytes_excluding([*params, *data, output])
    return saved + train_idx.numel() * train_idx.element_size()
