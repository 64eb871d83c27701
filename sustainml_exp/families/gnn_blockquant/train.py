"""Full-batch GraphSAGE training with compressed activations: the ``gnn_blockquant`` run function."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sustainml_exp.compress import CompressionSpec, resolve_backend
from sustainml_exp.compress.backend import ActivationCheck, QuantArgs, Workload
from sustainml_exp.families.gnn_blockquant.config import GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import (
    GraphData,
    GraphShape,
    check_present,
    graph_shape,
    load_graph,
)
from sustainml_exp.families.gnn_blockquant.memory import activation_bytes, record_saved_tensors
from sustainml_exp.families.gnn_blockquant.model import GraphSAGE, effective_group_rows
from sustainml_exp.families.gnn_blockquant.preflight import check_memory
from sustainml_exp.family import RunContext
from sustainml_exp.peak_memory import MIB, PeakMemory

log = logging.getLogger("sustainml_exp")

# EXACT's arxiv loss: log(eps + CE) - log(eps); it damps large losses early in training.
_EXACT_ARXIV_EPS = 1.0 - math.log(2.0)


def compression_spec(cfg: GNNRunConfig, backend: str | None = None) -> CompressionSpec:
    """The model's CompressionSpec; ``backend`` (e.g. the resolved one) overrides ``cfg.compress.backend``."""
    c = cfg.compress
    return CompressionSpec(quant=c.quant, bits=c.bits, kept_frac=c.kept_frac, G_R=c.G_R, vm=c.vm,
                           group_cap=c.group_cap, fp32_tail=c.fp32_tail, store_rp_matrix=c.store_rp_matrix,
                           backend=backend or c.backend, lean=c.lean)


def compression_workload(cfg: GNNRunConfig, graph: GraphShape) -> Workload:
    """What the model will compress on a graph of this shape: its largest compressed tensor, every quantize_pack
    argument tuple (bits, group_size, vm_a, fp32_tail) its layers use, and its BatchNorm -> ReLU -> dropout (checked
    on two BatchNorm groups of rows plus the graph's ragged last group, so that a compiled backend compiles those
    shapes)."""
    from sustainml_exp.compress.vm import optimal_inner_level

    spec, m = compression_spec(cfg), cfg.model

    def quant_args(group_size: int) -> QuantArgs:
        return spec.bits, group_size, optimal_inner_level(group_size) if spec.vm else None, spec.fp32_tail

    dims = [graph.num_features] + [m.hidden] * (m.num_layers - 1)
    args = {quant_args(spec.group_size(spec.projected_dim(d))) for d in dims}
    activation = None
    if m.batch_norm and m.num_layers > 1:
        bn_args = quant_args(spec.group_size(m.hidden))
        args.add(bn_args)
        group_rows = spec.rows_per_group(m.hidden)
        activation = ActivationCheck(rows=2 * group_rows + graph.num_nodes % group_rows, width=m.hidden,
                                     quant_args=bn_args, dropout_p=m.dropout, lean=spec.lean)
    return Workload(largest_values=graph.num_nodes * max(dims), quant_args=tuple(sorted(args, key=str)),
                    dropout_p=m.dropout, activation=activation)


def resolved_backend(cfg: GNNRunConfig, device: str, graph: GraphShape | None = None) -> str:
    """The backend the compressed ops will use on ``device`` ('none' when nothing is compressed). Without a graph
    shape only the choice itself is checked: ValueError (one line) for a backend that cannot run here. With one,
    auto may pick the compiled backend for a large graph, and the chosen one is self-checked (and compiled) on the
    model's own quantization arguments, outside any timed epoch."""
    if cfg.compress.quant == "fp32":
        return "none"
    workload = None if graph is None else compression_workload(cfg, graph)
    return resolve_backend(cfg.compress.backend, torch.device(device), workload).name


def build_model(cfg: GNNRunConfig, graph: GraphData, backend: str | None = None) -> GraphSAGE:
    m = cfg.model
    return GraphSAGE(in_dim=graph.x.shape[1], hidden=m.hidden, out_dim=graph.num_classes, num_layers=m.num_layers,
                     dropout=m.dropout, batch_norm=m.batch_norm, spec=compression_spec(cfg, backend),
                     run_seed=cfg.seed)


def training_loss(log_probs: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    ce = F.nll_loss(log_probs, target)
    if kind == "exact_arxiv":
        return torch.log(_EXACT_ARXIV_EPS + ce) - math.log(_EXACT_ARXIV_EPS)
    return ce


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _accuracy(pred: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> float:
    return (pred[idx] == y[idx]).float().mean().item()


@torch.no_grad()
def evaluate(model: torch.nn.Module, graph: GraphData) -> tuple[float, float, float]:
    model.eval()
    pred = model(graph.x, graph).argmax(dim=-1)
    return (_accuracy(pred, graph.y, graph.train_idx), _accuracy(pred, graph.y, graph.val_idx),
            _accuracy(pred, graph.y, graph.test_idx))


TRAIN_PHASES = ("forward", "backward", "optimizer")


def _no_phase(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


def train_step(model: torch.nn.Module, graph: GraphData, optimizer: torch.optim.Optimizer, cfg: GNNRunConfig,
               step: int, phase: Callable[[str], AbstractContextManager[Any]] = _no_phase) -> torch.Tensor:
    """One full-batch training step; ``phase(name)`` wraps each of TRAIN_PHASES (profiler labels, per-phase peak
    memory in scripts/bench_gnn.py)."""
    model.train()
    with phase("forward"):
        optimizer.zero_grad(set_to_none=True)
        out = model(graph.x, graph, step)
        loss = training_loss(out[graph.train_idx], graph.y[graph.train_idx], cfg.model.loss)
        del out
    with phase("backward"):
        loss.backward()
    with phase("optimizer"):
        if cfg.model.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.model.grad_clip)
        optimizer.step()
    return loss.detach()


def measure_activation_mb(model: torch.nn.Module, graph: GraphData, cfg: GNNRunConfig) -> float:
    """act_mem_mb of one training-mode forward (paper protocol, see memory.py); leaves no graph behind."""
    model.train()
    with record_saved_tensors() as ledger:
        out = model(graph.x, graph, step=0)
    nbytes = activation_bytes(ledger, params=[*model.parameters(), *model.buffers()], data=graph.data_tensors(),
                              output=out, train_idx=graph.train_idx)
    del out
    return nbytes / MIB


@torch.no_grad()
def layer_activation_stats(model: GraphSAGE, graph: GraphData) -> list[dict[str, Any]]:
    """Table 5 statistics of every layer's (projected) input, normalized per quantization group."""
    from sustainml_exp.families.gnn_blockquant.analysis import activation_stats, normalize_groups
    from sustainml_kernels.quant_ref import rademacher_ref

    spec = model.spec
    model.train()
    with model.capture_layer_inputs() as inputs:
        model(graph.x, graph, step=0)
    stats = []
    for layer, x in enumerate(inputs):
        r = spec.projected_dim(x.shape[1])
        projected = x @ rademacher_ref(layer, x.shape[1], r, x.device) if r < x.shape[1] else x
        d = spec.group_size(r)
        stats.append(activation_stats(normalize_groups(projected, d, spec.bits), d=d, B=2**spec.bits - 1))
    return stats


def run(cfg: GNNRunConfig, ctx: RunContext) -> dict[str, Any]:
    device = ctx.device
    resolved_backend(cfg, device)  # fails before any data is loaded when the backend cannot run here
    check_present(cfg.dataset, cfg.data_dir, cfg.download)  # a missing dataset says so before the preflight
    shape = graph_shape(cfg.dataset)
    cfg.check_graph_size(shape.num_nodes)
    backend = resolved_backend(cfg, device, shape)
    estimate = check_memory(cfg, shape, device, backend)  # before anything large is allocated
    graph = load_graph(cfg.dataset, Path(cfg.data_dir), seed=cfg.seed, download=cfg.download).to(device)
    model = build_model(cfg, graph, None if backend == "none" else backend).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model.lr, weight_decay=cfg.model.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    initial_state = copy.deepcopy(model.state_dict())
    act_mem_mb = measure_activation_mb(model, graph, cfg)
    model.load_state_dict(initial_state)  # the measuring forward moved BatchNorm running stats

    peak_memory = PeakMemory(device)
    peak_memory.reset()
    log.info("training %s on %s (%d nodes, %d edges) for %d epochs on %s (compress backend %s)", cfg.quant,
             cfg.dataset, graph.x.shape[0], graph.num_edges, cfg.epochs, device, backend)
    progress = ctx.make_progress(cfg.epochs, cfg.quant)
    timed_s, train_s, best_val, test_at_best, best_epoch = 0.0, 0.0, -1.0, float("nan"), 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            _sync(device)
            t0 = time.perf_counter()
            loss = train_step(model, graph, optimizer, cfg, step=epoch)
            _sync(device)
            step_s = time.perf_counter() - t0
            train_s += step_s
            if epoch > cfg.untimed_epochs:
                timed_s += step_s
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                _, val_acc, test_acc = evaluate(model, graph)
                if val_acc > best_val:
                    best_val, test_at_best, best_epoch = val_acc, test_acc, epoch
                progress.update(epoch, loss=float(loss), val_acc=val_acc, best_test=test_at_best)
            else:
                progress.update(epoch, loss=float(loss))
            if not math.isfinite(float(loss)):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}")
    finally:
        progress.close()

    metrics: dict[str, Any] = {
        "epochs": cfg.epochs,
        "epochs_per_s": (cfg.epochs - cfg.untimed_epochs) / timed_s if timed_s > 0 else float("nan"),
        "train_s": train_s,  # every epoch's training step, warm-up included (evaluation excluded)
        "peak_mem_mb": peak_memory.peak_mb(),
        "est_peak_mb": estimate.total_mb,
        "peak_mem_source": peak_memory.source,
        "n_params": n_params,
        "test_acc": test_at_best,
        "val_acc": best_val,
        "best_epoch": best_epoch,
        "act_mem_mb": act_mem_mb,
        "effective_G_R": effective_group_rows(model),
        "compress_backend": backend,
        "num_nodes": graph.x.shape[0],
        "num_edges": graph.num_edges,
    }
    if cfg.activation_stats and model.spec.enabled:
        stats = layer_activation_stats(model, graph)
        for layer, s in enumerate(stats):
            metrics[f"jsd_uniform_l{layer}"] = s["jsd_uniform"]
            metrics[f"jsd_cn_l{layer}"] = s["jsd_cn"]
            metrics[f"vm_var_red_pct_l{layer}"] = s["vm_var_reduction_pct"]
            metrics[f"stats_d_l{layer}"] = s["d"]
        metrics["artifacts"] = {"activation_stats": stats}
    log.info("%s test_acc=%.4f val_acc=%.4f epochs_per_s=%.2f act_mem_mb=%.2f", cfg.quant, test_at_best, best_val,
             metrics["epochs_per_s"], act_mem_mb)
    return metrics
