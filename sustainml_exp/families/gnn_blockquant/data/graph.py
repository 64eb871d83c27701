"""The graph every source is turned into: ``build_graph_data`` applies the common protocol to a source's
``RawGraph`` (edges as the source stores them): drop self loops, make the graph undirected with ``to_undirected``
(as the arxiv scripts do) and build the row-normalised mean-aggregation adjacency that the model multiplies with."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

# torch_geometric's import decorates helpers with torch.jit.script, which recent torch deprecates: a warning
# about the library, not about the user's run, so it stays out of every run's output.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torch_geometric.utils import remove_self_loops, to_undirected


@dataclass
class GraphData:
    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    train_idx: torch.Tensor  # int64
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    adj: torch.Tensor  # (N, N) sparse CSR float32: adj[dst, src] = 1 / in_degree(dst), no self loops
    adj_t: torch.Tensor  # adj transposed, sparse CSR (the backward of adj @ h multiplies with it)
    num_classes: int
    num_edges: int  # directed edges stored in adj, i.e. after making the graph undirected

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def data_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the graph, so that memory accounting can leave the data out."""
        return [getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]

    def to(self, device: torch.device | str) -> GraphData:
        moved: dict[str, Any] = {t.name: getattr(self, t.name).to(device) for t in fields(self)
                                 if isinstance(getattr(self, t.name), torch.Tensor)}
        return replace(self, **moved)


@dataclass
class RawGraph:
    """A graph as its source provides it, before the common symmetrise-and-normalise protocol."""

    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    edge_index: torch.Tensor  # (2, E) int64, row 0 = source, row 1 = target, possibly one direction only
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int


def build_graph_data(raw: RawGraph) -> GraphData:
    num_nodes = raw.x.shape[0]
    edge_index, _ = remove_self_loops(raw.edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    adj, adj_t = mean_aggregation_adjacency(edge_index, num_nodes)
    return GraphData(name=raw.name, x=raw.x.to(torch.float32).contiguous(), y=raw.y.to(torch.int64),
                     train_idx=raw.train_idx.to(torch.int64), val_idx=raw.val_idx.to(torch.int64),
                     test_idx=raw.test_idx.to(torch.int64), adj=adj, adj_t=adj_t,
                     num_classes=raw.num_classes, num_edges=int(edge_index.shape[1]))


def mean_aggregation_adjacency(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adj, adj_t) as sparse CSR float32 with adj[dst, src] = 1 / in_degree(dst) for each message src -> dst.

    ``adj @ h`` is then the mean over in-neighbours; a node without in-neighbours gets an all-zero row.
    Duplicate edges count once.
    """
    # Sorted unique keys order the edges by (src, dst): adj_t's CSR order as is, adj's after one more sort.
    # Two sorts instead of two COO coalesces (each a sort plus a reduction) roughly halves the time on arxiv.
    n = num_nodes
    key = torch.unique(edge_index[0].to(torch.int64) * n + edge_index[1].to(torch.int64), sorted=True)
    src, dst = key // n, key % n
    in_degree = torch.bincount(dst, minlength=n).to(torch.float32)
    values = in_degree[dst].reciprocal()
    adj_t = _csr(src, dst, values, n)
    by_dst = torch.sort(dst * n + src).indices
    adj = _csr(dst[by_dst], src[by_dst], values[by_dst], n)
    return adj, adj_t


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Sparse CSR from unique (row, col) pairs already sorted by row, then column."""
    crow = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=n), dim=0, out=crow[1:])
    # Built sorted and unique above, so the invariant check would only cost time; torch's "CSR is beta" notice
    # would print on every run although only spmm, which is stable on CSR, touches these tensors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols, values, (n, n), dtype=torch.float32, check_invariants=False)
