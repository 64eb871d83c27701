"""Memory preflight of a GraphSAGE run: its peak, estimated before the graph is loaded, against the budget.

Peak = what the process already holds (interpreter, libraries, compiled kernels) + the graph (features, labels,
splits, the CSR adjacency and its transpose's values) + parameters, Adam's two moments and the run's initial-state
copy + the most a training step or an evaluation allocates above what it starts with. That last part is measured,
not modelled: the configured model (same widths, same compression, same backend) takes a step and an evaluation on
two small random graphs of the run's feature width, classes and train fraction, torch's allocator is read (the
byte accounting of ``peak_live_bytes``, and of ``act_mem_mb`` for the activations alone), and the bytes are
extrapolated linearly in the node count (a graph no larger than the proxies is measured as it is). Every buffer of
a step is N x width (row chunks are at most an eighth of one), so the extrapolation holds; the fixed part (weight
gradients, optimizer state and temporaries) is the intercept.
Building a graph from its edge list holds more than the built graph (``load_mb``); the larger of the two counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from sustainml_exp.families.gnn_blockquant.config import GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import GraphShape, RawGraph, build_graph_data
from sustainml_exp.memory_budget import check_fits, device_offers_mb, gib
from sustainml_exp.peak_memory import MIB, PeakMemory, peak_live_bytes

log = logging.getLogger("sustainml_exp")

# Node counts of the two proxy graphs: large enough that per-op overheads are small next to the N x width buffers,
# small enough that both steps take well under a second on 2 cores.
PROXY_NODES = (4096, 8192)
_PROXY_MAX_DEGREE = 16  # the adjacency is data, not step memory: a few neighbours per node exercise the same ops
# Copies of the parameters held throughout: the parameters, Adam's exp_avg and exp_avg_sq, the initial state.
_PARAM_COPIES = 4
_ALTERNATIVE = {"quant": "block", "G_R": 64}


@dataclass(frozen=True)
class PeakEstimate:
    held_mb: float  # the process before loading anything of the run (CPU: resident set; CUDA: allocated)
    graph_mb: float
    model_mb: float
    step_mb: float  # a training step's or an evaluation's peak above what it starts with, whichever is larger
    act_mb: float  # act_mem_mb extrapolated the same way (part of step_mb)
    load_mb: float  # building the graph: its edge list, their sorted keys and the built graph at once

    @property
    def total_mb(self) -> float:
        return self.held_mb + max(self.graph_mb + self.model_mb + self.step_mb, self.load_mb)


def graph_bytes(shape: GraphShape) -> int:
    n, e = shape.num_nodes, shape.num_edges
    return (n * shape.num_features * 4 + 2 * n * 8  # features; labels and the three splits (int64)
            + (n + 1) * 8 + e * 8 + 2 * e * 4)  # CSR rows and columns shared by adj and adj_t; their values


def load_bytes(shape: GraphShape) -> int:
    # At most: the edge list in both directions (2 x int64 each) and its keys before and after deduplication.
    return graph_bytes(shape) + 4 * shape.num_edges * 8


def proxy_graph(shape: GraphShape, num_nodes: int, seed: int = 0) -> RawGraph:
    """A random graph with ``shape``'s feature width, classes, train fraction and (capped) degree."""
    gen = torch.Generator().manual_seed(seed)
    degree = max(1, min(_PROXY_MAX_DEGREE, shape.num_edges // max(1, shape.num_nodes)))
    edges = torch.randint(0, num_nodes, (2, num_nodes * degree // 2), generator=gen)
    perm = torch.randperm(num_nodes, generator=gen)
    n_train = max(1, round(num_nodes * shape.num_train / shape.num_nodes))
    n_val = (num_nodes - n_train) // 2
    splits = [part.sort().values for part in torch.split(perm, [n_train, n_val, num_nodes - n_train - n_val])]
    x = torch.randn(num_nodes, shape.num_features, generator=gen)
    y = torch.randint(0, shape.num_classes, (num_nodes,), generator=gen)
    return RawGraph("proxy", x, y, edges, *splits, num_classes=shape.num_classes)


def _measure_proxy(cfg: GNNRunConfig, shape: GraphShape, num_nodes: int, device: str,
                   backend: str) -> tuple[int, int, int]:
    """(peak bytes of a step or an evaluation, act_mem bytes, parameter count) on a proxy graph of ``num_nodes``.

    The step is the model's first, so it also allocates Adam's moments (counted in model_mb too: a few MB)."""
    from sustainml_exp.families.gnn_blockquant.train import (
        build_model,
        evaluate,
        measure_activation_mb,
        train_step,
    )

    graph = build_graph_data(proxy_graph(shape, num_nodes)).to(device)
    model = build_model(cfg, graph, None if backend == "none" else backend).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model.lr)
    act_bytes = round(measure_activation_mb(model, graph, cfg) * MIB)
    step = peak_live_bytes(lambda: train_step(model, graph, optimizer, cfg, step=1), device)
    evaluation = peak_live_bytes(lambda: evaluate(model, graph), device)
    return max(step, evaluation), act_bytes, sum(p.numel() for p in model.parameters())


def estimate_peak(cfg: GNNRunConfig, shape: GraphShape, device: str, backend: str) -> PeakEstimate:
    """The run's peak on a graph of ``shape``; the caller's random state is left as it was. A graph no larger than
    the larger proxy is measured at its own size, once."""
    sizes = PROXY_NODES if shape.num_nodes > PROXY_NODES[1] else (shape.num_nodes,)
    cuda = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        measured = [_measure_proxy(cfg, shape, n, device, backend) for n in sizes]
    n_params = measured[0][2]

    def extrapolate(index: int) -> float:
        small, large = measured[0][index], measured[-1][index]
        per_node = (large - small) / (sizes[-1] - sizes[0]) if len(sizes) > 1 else 0.0
        return max(0.0, small + per_node * (shape.num_nodes - sizes[0])) / MIB

    return PeakEstimate(held_mb=PeakMemory(device).current_mb(), graph_mb=graph_bytes(shape) / MIB,
                        model_mb=_PARAM_COPIES * 4 * n_params / MIB, step_mb=extrapolate(0),
                        act_mb=extrapolate(1), load_mb=load_bytes(shape) / MIB)


def check_memory(cfg: GNNRunConfig, shape: GraphShape, device: str, backend: str) -> PeakEstimate:
    """The run's PeakEstimate, after comparing it with ``cfg.memory_budget_mb`` (null: what ``device`` offers) as
    ``cfg.memory_check`` says; a refusal names what quant=block G_R=64 would need instead."""
    estimate = estimate_peak(cfg, shape, device, backend)
    held = estimate.held_mb
    budget = cfg.memory_budget_mb if cfg.memory_budget_mb is not None else device_offers_mb(device, held)
    log.info("memory preflight: estimated peak %s (held %.0f MB, graph %.0f MB, model %.0f MB, step %.0f MB), "
             "budget %s", gib(estimate.total_mb), held, estimate.graph_mb, estimate.model_mb, estimate.step_mb,
             gib(budget))
    check_fits(estimate.total_mb, cfg.memory_check, budget, lambda: _alternative(cfg, shape, device))
    return estimate


def _alternative(cfg: GNNRunConfig, shape: GraphShape, device: str) -> str:
    if all(getattr(cfg, key) == value for key, value in _ALTERNATIVE.items()):
        return ""
    from sustainml_exp.families.gnn_blockquant.train import resolved_backend

    alt = replace(cfg, **_ALTERNATIVE, compress=replace(cfg.compress, **_ALTERNATIVE))
    needs = estimate_peak(alt, shape, device, resolved_backend(alt, device, shape)).total_mb
    return " ".join(f"{key}={value}" for key, value in _ALTERNATIVE.items()) + f" needs ~{gib(needs)}"
