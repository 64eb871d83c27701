"""GraphSAGE (mean aggregation, no self loops) whose saved activations are compressed during training.

Per hidden layer, training mode with compression enabled saves exactly what the spec lists: the projected INT2
layer input (shared by the root linear), the projected INT2 aggregation (neighbour linear), the INT2 BatchNorm
input, and 1-bit ReLU and dropout masks (with ``spec.lean`` the dropout mask is not stored but regenerated from
its seed in backward). Input gradients use exact weights. The compressed training step runs as one autograd
Function (``compressed_sage``) that frees every fp32 intermediate as soon as it can. FP32 training uses the plain
torch ops, so FP32 reproduces the paper's byte count (4864 bytes per arxiv node); evaluation (without autograd)
aggregates in row chunks and applies ReLU in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sustainml_exp.compress import CompressionSpec, spmm
from sustainml_exp.families.gnn_blockquant.compressed_sage import SAGEPlan, compressed_sage, sage_conv
from sustainml_exp.families.gnn_blockquant.data import GraphData

# Slots give every compressed tensor of a step its own random stream (see ``op_seed``).
SLOTS = {"input": 0, "agg": 1, "bn": 2, "dropout": 3}
_SLOTS_PER_LAYER = len(SLOTS)


def op_seed(run_seed: int, step: int, layer: int, slot: int) -> int:
    """Seed of one compressed tensor: distinct for every (run, step, layer, slot), stable across devices."""
    counter = (step * 64 + layer) * _SLOTS_PER_LAYER + slot
    return ((run_seed & 0xFFFFFFFF) << 32) | (counter & 0xFFFFFFFF)


class SAGELayer(nn.Module):
    """out = lin_l(mean_{j in N(i)} x_j) + lin_r(x_i); parameter names follow torch_geometric's SAGEConv."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin_l = nn.Linear(in_dim, out_dim, bias=True)
        self.lin_r = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, graph: GraphData) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation: never N x D aggregation and outputs at once
            return sage_conv(x, graph.adj, self.lin_l.weight, self.lin_l.bias, self.lin_r.weight)
        return self.lin_l(spmm(graph.adj, graph.adj_t, x)) + self.lin_r(x)


class GraphSAGE(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, dropout: float,
                 batch_norm: bool, spec: CompressionSpec, run_seed: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.convs = nn.ModuleList(SAGELayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers - 1)) if batch_norm else None
        self.dropout = dropout
        self.spec = spec
        self.run_seed = run_seed
        self._capture: list[torch.Tensor] | None = None

    @contextmanager
    def capture_layer_inputs(self) -> Iterator[list[torch.Tensor]]:
        """Collect the input of every SAGE layer during the forwards inside the block (for Table 5)."""
        self._capture = []
        try:
            yield self._capture
        finally:
            self._capture = None

    def forward(self, x: torch.Tensor, graph: GraphData, step: int = 0) -> torch.Tensor:
        if self.training and self.spec.enabled:
            return self._compressed_forward(x, graph, step).log_softmax(dim=-1)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if self._capture is not None:
                self._capture.append(x.detach())
            x = conv(x, graph)
            if i == last:
                break
            if self.bns is not None:
                x = self.bns[i](x)
            # Without autograd nothing keeps the BatchNorm output: ReLU overwrites it.
            x = F.relu(x) if torch.is_grad_enabled() else F.relu_(x)
            if self.training and self.dropout > 0:
                # The fused op keeps a bool mask on every device; F.dropout on CPU keeps a float32 one,
                # which would make FP32 activation memory device-dependent (CUDA uses the fused op).
                x, _ = torch.native_dropout(x, self.dropout, True)
        return x.log_softmax(dim=-1)

    def _compressed_forward(self, x: torch.Tensor, graph: GraphData, step: int) -> torch.Tensor:
        params: list[torch.Tensor] = []
        for conv in self.convs:
            params += [conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight]
        running_stats, momentum, eps = [], 0.0, 0.0
        if self.bns:  # None without BatchNorm, empty with a single layer
            for bn in self.bns:
                if bn.momentum is None:
                    raise ValueError("compressed training needs BatchNorm with a float momentum (cumulative "
                                     "averaging is not supported)")
                bn.num_batches_tracked.add_(1)
                params += [bn.weight, bn.bias]
                running_stats.append((bn.running_mean, bn.running_var))
            momentum, eps = self.bns[0].momentum, self.bns[0].eps
        seeds = [{slot: op_seed(self.run_seed, step, i, slot) for slot in SLOTS.values()}
                 for i in range(len(self.convs))]
        plan = SAGEPlan(adj=graph.adj, adj_t=graph.adj_t, spec=self.spec, num_layers=len(self.convs), seeds=seeds,
                        dropout=self.dropout, batch_norm=bool(self.bns), running_stats=running_stats,
                        momentum=momentum, eps=eps, slots=SLOTS, capture=self._capture)
        return compressed_sage(plan, x, params)


def effective_group_rows(model: GraphSAGE) -> str:
    """Rows per quantization block actually used for each compressed tensor, e.g. 'L0 x:64 agg:64 bn:8 | ...'."""
    spec = model.spec
    if not spec.enabled:
        return ""
    parts = []
    for i, conv in enumerate(model.convs):
        in_dim = conv.lin_r.in_features
        rows = spec.rows_per_group(spec.projected_dim(in_dim))
        text = f"L{i} x:{rows} agg:{rows}"
        if model.bns is not None and i < len(model.convs) - 1:
            text += f" bn:{spec.rows_per_group(conv.lin_r.out_features)}"
        parts.append(text)
    return " | ".join(parts)
