"""The compressed GraphSAGE step (one autograd Function) against the composition of the per-op compressed functions,
its peak memory against FP32's, evaluation without autograd, and the PyG baseline of bench_gnn.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sustainml_exp.compress import (
    CompressionSpec,
    compressed_batch_norm,
    compressed_linear,
    dropout_bitmask,
    relu_bitmask,
    spmm,
)
from sustainml_exp.families.gnn_blockquant.config import CompressConfig, GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import RawGraph, build_graph_data, load_graph
from sustainml_exp.families.gnn_blockquant.memory import activation_bytes, record_saved_tensors
from sustainml_exp.families.gnn_blockquant.model import SLOTS, GraphSAGE, op_seed
from sustainml_exp.families.gnn_blockquant.pyg_baseline import PygGraphSAGE, pyg_adj_t
from sustainml_exp.families.gnn_blockquant.train import build_model, evaluate, train_step
from sustainml_exp.peak_memory import peak_live_bytes

pytestmark = pytest.mark.usefixtures("one_thread")  # small shapes; a shared CPU makes waiting threads costly


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return load_graph("synthetic", Path(tmp_path_factory.mktemp("data")), seed=0)


def per_op_forward(model: GraphSAGE, x: torch.Tensor, graph, step: int) -> torch.Tensor:
    """The compressed forward as a composition of the per-op compressed functions (the readable reference)."""
    spec, last = model.spec, len(model.convs) - 1
    for i, conv in enumerate(model.convs):
        seed = {name: op_seed(model.run_seed, step, i, slot) for name, slot in SLOTS.items()}
        agg = spmm(graph.adj, graph.adj_t, x)
        x = (compressed_linear(agg, conv.lin_l.weight, conv.lin_l.bias, spec, seed["agg"])
             + compressed_linear(x, conv.lin_r.weight, None, spec, seed["input"]))
        if i == last:
            break
        if model.bns:
            bn = model.bns[i]
            bn.num_batches_tracked.add_(1)
            x = compressed_batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.momentum, bn.eps,
                                      spec, seed["bn"])
        x = relu_bitmask(x, spec)
        if model.dropout > 0:
            x = dropout_bitmask(x, model.dropout, seed["dropout"], spec)
    return x.log_softmax(dim=-1)


def _step(model: GraphSAGE, graph, fused: bool) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    model.train()
    with record_saved_tensors() as ledger:
        out = model(graph.x, graph, step=5) if fused else per_op_forward(model, graph.x, graph, 5)
    nbytes = activation_bytes(ledger, params=[*model.parameters(), *model.buffers()], data=graph.data_tensors(),
                              output=out, train_idx=graph.train_idx)
    loss = F.nll_loss(out[graph.train_idx], graph.y[graph.train_idx])
    return out.detach(), nbytes, list(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize(("spec", "layers", "batch_norm", "dropout"), [
    (CompressionSpec(quant="block", G_R=4), 3, True, 0.5),
    (CompressionSpec(quant="exact", vm=True), 3, True, 0.5),
    (CompressionSpec(quant="block", G_R=64, lean=True), 2, False, 0.3),
    (CompressionSpec(quant="block", G_R=64, group_cap=1024, fp32_tail=True, store_rp_matrix=True), 3, True, 0.5),
    (CompressionSpec(quant="block", G_R=8, kept_frac=1.0), 1, True, 0.0),
], ids=["block", "exact-vm", "lean-no-bn", "paper-layout", "one-layer-no-projection"])
def test_fused_step_matches_the_per_op_composition(graph, spec: CompressionSpec, layers: int, batch_norm: bool,
                                                   dropout: float) -> None:
    torch.manual_seed(0)
    fused_model = GraphSAGE(graph.x.shape[1], 64, graph.num_classes, layers, dropout, batch_norm, spec, run_seed=3)
    per_op_model = copy.deepcopy(fused_model)
    fused_out, fused_bytes, fused_grads = _step(fused_model, graph, fused=True)
    ref_out, ref_bytes, ref_grads = _step(per_op_model, graph, fused=False)
    assert fused_bytes == ref_bytes  # the same compressed tensors, no fp32 copy
    torch.testing.assert_close(fused_out, ref_out, rtol=0, atol=1e-5)
    for got, want in zip(fused_grads, ref_grads):  # only fp32 summation orders differ
        assert float((got - want).norm()) <= 1e-3 * float(want.norm()) + 1e-7
    for got, want in zip(fused_model.buffers(), per_op_model.buffers()):  # BatchNorm running statistics
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_same_seed_same_training(graph) -> None:
    cfg = GNNRunConfig(dataset="synthetic", quant="block", G_R=64,
                       compress=CompressConfig(quant="block", bits=2, kept_frac=0.125, G_R=64, vm=False,
                                               backend="torch", lean=False))
    params = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(cfg, graph)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = [train_step(model, graph, optimizer, cfg, step).item() for step in (1, 2)]
        params.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert params[0][0] == params[1][0]
    assert all(torch.equal(a, b) for a, b in zip(params[0][1], params[1][1]))


def test_evaluation_without_autograd_matches_the_autograd_forward(graph) -> None:
    torch.manual_seed(0)
    model = GraphSAGE(graph.x.shape[1], 64, graph.num_classes, 3, 0.5, True, CompressionSpec(), run_seed=0).eval()
    with torch.no_grad():
        frugal = model(graph.x, graph)
    plain = model(graph.x, graph)  # autograd on: the per-op path
    torch.testing.assert_close(frugal, plain.detach(), rtol=1e-5, atol=1e-5)


def test_pyg_baseline_computes_the_same_graphsage(graph) -> None:
    torch.manual_seed(0)
    ours = GraphSAGE(graph.x.shape[1], 64, graph.num_classes, 3, 0.5, True, CompressionSpec(quant="fp32"),
                     run_seed=0).eval()
    pyg = PygGraphSAGE(graph.x.shape[1], 64, graph.num_classes, 3, 0.5, True, pyg_adj_t(graph)).eval()
    # Same parameter names (lin_l, lin_r, BatchNorm), so the weights carry over as they are.
    missing = pyg.load_state_dict(ours.state_dict(), strict=False)
    assert not missing.missing_keys
    with torch.no_grad():
        torch.testing.assert_close(pyg(graph.x, graph), ours(graph.x, graph), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------- peak memory


def _random_graph(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (2, 6 * n), generator=g)
    perm = torch.randperm(n, generator=g)
    split = [perm[: n // 2].sort().values, perm[n // 2: 3 * n // 4].sort().values, perm[3 * n // 4:].sort().values]
    x, y = torch.randn(n, 128, generator=g), torch.randint(0, 40, (n,), generator=g)
    return build_graph_data(RawGraph("random", x, y, edges, *split, num_classes=40))


def _peak_live_bytes(fn) -> int:
    return peak_live_bytes(fn, "cpu")


def _training_peaks(quant: str, graph) -> tuple[int, int]:
    """(peak live bytes of a training step, of an evaluation) for the default GraphSAGE on ``graph``."""
    # The compiled backend: the eager reference's mask packing alone holds int32/int64 copies of a mask (2-4 T).
    compress = CompressConfig(quant=quant, bits=2, kept_frac=0.125, G_R=64, vm=False, backend="torch-compiled",
                              lean=False)
    cfg = GNNRunConfig(dataset="synthetic", quant=quant, G_R=64, compress_backend="torch-compiled",
                       compress=compress)
    torch.manual_seed(0)
    model = build_model(cfg, graph, None if quant == "fp32" else "torch-compiled")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, graph, optimizer, cfg, 1)  # optimizer state
    return (_peak_live_bytes(lambda: train_step(model, graph, optimizer, cfg, 2)),
            _peak_live_bytes(lambda: evaluate(model, graph)))


def test_compressed_step_holds_about_two_activations() -> None:
    graph = _random_graph(8_000)
    t_bytes = graph.num_nodes * 128 * 4  # T: one N x hidden fp32 activation
    fp32_step, fp32_eval = _training_peaks("fp32", graph)
    block_step, block_eval = _training_peaks("block", graph)
    # FP32 keeps ~9.5 activations for backward. The compressed step holds two at most, plus what autograd holds
    # meanwhile (the N x 40 output gradient, the compressed copies, ~0.6 T) and one row chunk (~0.1 T).
    assert fp32_step > 9 * t_bytes
    assert block_step < 3 * t_bytes
    assert block_step < 0.3 * fp32_step
    # Evaluation: a layer's input and its aggregation (overwritten by the output), plus one row chunk.
    assert block_eval < 2.25 * t_bytes and fp32_eval < 2.25 * t_bytes
