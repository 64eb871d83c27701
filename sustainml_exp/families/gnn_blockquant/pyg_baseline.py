"""The FP32 baseline a user would otherwise train: torch_geometric's GraphSAGE of the OGB arxiv example
(``examples/nodeproppred/arxiv/gnn.py``: SAGEConv with mean aggregation, BatchNorm, ReLU, dropout), on the same
graph, with PyG's fastest CPU input form: the adjacency as a sparse CSR ``adj_t`` (``T.ToSparseTensor(layout=
torch.sparse_csr)``; ``torch.sparse.mm`` with mean reduction, against an edge_index's gather/scatter message passing).

It has the call signature of ``model.GraphSAGE`` so that ``train.train_step`` and ``train.evaluate`` run it as is.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from sustainml_exp.families.gnn_blockquant.data import GraphData
from sustainml_exp.families.gnn_blockquant.data.real import quiet_library_import

with quiet_library_import():
    import torch_geometric.transforms as T
    from torch_geometric.data import Data
    from torch_geometric.nn import SAGEConv

__all__ = ["PygGraphSAGE", "pyg_adj_t"]


def pyg_adj_t(graph: GraphData) -> torch.Tensor:
    """The graph's adjacency as PyG's sparse CSR ``adj_t`` (row = target node, unit values), built by PyG itself."""
    crow = graph.adj.crow_indices()
    targets = torch.repeat_interleave(torch.arange(graph.num_nodes, device=crow.device), crow[1:] - crow[:-1])
    data = Data(edge_index=torch.stack([graph.adj.col_indices(), targets]), num_nodes=graph.num_nodes)
    with warnings.catch_warnings():  # torch's notices about its sparse CSR support, not about this run
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return T.ToSparseTensor(layout=torch.sparse_csr)(data).adj_t


class PygGraphSAGE(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, dropout: float,
                 batch_norm: bool, adj_t: torch.Tensor) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.convs = nn.ModuleList(SAGEConv(a, b, aggr="mean") for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers - 1)) if batch_norm else None
        self.dropout = dropout
        self.adj_t = adj_t  # graph data, not a parameter or buffer: kept out of state_dict

    def forward(self, x: torch.Tensor, graph: GraphData, step: int = 0) -> torch.Tensor:
        for i, conv in enumerate(self.convs[:-1]):
            x = conv(x, self.adj_t)
            if self.bns is not None:
                x = self.bns[i](x)
            x = F.relu(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.convs[-1](x, self.adj_t).log_softmax(dim=-1)
