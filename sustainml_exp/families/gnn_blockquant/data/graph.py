"""The graph every source is turned into: ``build_graph_data`` applies the common protocol to a source's
``RawGraph`` (edges as the source stores them): drop self loops, make the graph undirected (as the arxiv scripts'
``to_undirected`` does) and build the row-normalised mean-aggregation adjacency that the model multiplies with.
``GraphShape`` is what memory depends on, known before a graph is loaded (the memory preflight's input)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class GraphShape:
    """What memory depends on, known before a graph is loaded (see ``graph_shape``)."""

    num_nodes: int
    num_features: int
    num_classes: int
    num_edges: int  # directed edges of the adjacency, i.e. after making the graph undirected
    num_train: int


@dataclass
class GraphData:
    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    train_idx: torch.Tensor  # int64
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    # (N, N) sparse CSR float32: adj[dst, src] = 1 / in_degree(dst), no self loops. The graph is undirected, so
    # adj_t (its transpose, which the backward of adj @ h multiplies with) has the same pattern and shares
    # adj's index tensors; only the values differ.
    adj: torch.Tensor
    adj_t: torch.Tensor
    num_classes: int
    num_edges: int  # directed edges stored in adj, i.e. after making the graph undirected

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> GraphShape:
        return GraphShape(num_nodes=self.num_nodes, num_features=self.x.shape[1], num_classes=self.num_classes,
                          num_edges=self.num_edges, num_train=self.train_idx.numel())

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
    adj, adj_t = undirected_mean_adjacency(raw.edge_index, raw.x.shape[0])
    return GraphData(name=raw.name, x=raw.x.to(torch.float32).contiguous(), y=raw.y.to(torch.int64),
                     train_idx=raw.train_idx.to(torch.int64), val_idx=raw.val_idx.to(torch.int64),
                     test_idx=raw.test_idx.to(torch.int64), adj=adj, adj_t=adj_t,
                     num_classes=raw.num_classes, num_edges=int(adj.values().numel()))


def undirected_mean_adjacency(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adj, adj_t) of the graph made undirected, as sparse CSR float32: self loops dropped, every edge in both
    directions, duplicates once (torch_geometric's remove_self_loops + to_undirected), and
    adj[dst, src] = 1 / in_degree(dst), so ``adj @ h`` is the mean over neighbours (all-zero rows for isolated
    nodes). adj_t shares adj's index tensors.

    Sorted in place in numpy, so on ogbn-products (124M directed edges) it holds the edges once, their keys twice
    and the result, instead of the several edge-sized copies of to_undirected's coalesce."""
    n = num_nodes
    edges = edge_index.numpy()
    src, dst = edges[0].astype(np.int64, copy=False), edges[1].astype(np.int64, copy=False)
    e = src.size
    keys = np.empty(2 * e, dtype=np.int64)  # row * n + col of both directions, in chunks: no edge-sized temporaries
    for start in range(0, e, _EDGE_CHUNK):
        stop = min(start + _EDGE_CHUNK, e)
        s, d = src[start:stop], dst[start:stop]
        np.add(s * n, d, out=keys[start:stop])
        np.add(d * n, s, out=keys[e + start:e + stop])
    keys.sort()
    keep = np.empty(keys.size, dtype=bool)
    if keys.size:
        keep[0] = True
        np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    for start in range(0, keys.size, _EDGE_CHUNK):  # self loops
        chunk = keys[start:start + _EDGE_CHUNK]
        keep[start:start + _EDGE_CHUNK] &= chunk // n != chunk % n
    keys = keys[keep]
    del keep
    crow = np.searchsorted(keys, np.arange(n + 1, dtype=np.int64) * n)
    np.remainder(keys, n, out=keys)  # now the column indices
    degree = np.diff(crow)
    inv_degree = np.zeros(n, dtype=np.float32)
    np.divide(1.0, degree, out=inv_degree, where=degree > 0)
    crow_t, col_t = torch.from_numpy(crow), torch.from_numpy(keys)
    adj = csr_adjacency(crow_t, col_t, torch.from_numpy(np.repeat(inv_degree, degree)), n)
    adj_t = csr_adjacency(crow_t, col_t, torch.from_numpy(inv_degree[keys]), n)
    return adj, adj_t


_EDGE_CHUNK = 1 << 23


def csr_adjacency(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    # Built sorted and unique above, so the invariant check would only cost time; torch's "CSR is beta" notice
    # would print on every run although only spmm, which is stable on CSR, touches these tensors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), dtype=torch.float32, check_invariants=False)
