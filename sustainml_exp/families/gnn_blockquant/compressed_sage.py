"""Compressed GraphSAGE training - forward and backward of the whole network - as one autograd Function.

It saves exactly what the per-op functions of ``sustainml_exp.compress`` save (the projected INT-b layer input and
aggregation of every layer, the INT-b BatchNorm input, 1-bit ReLU and dropout masks), with the same seeds, so
``act_mem_mb`` is unchanged. Being one Function, it owns every intermediate buffer, which per-op Functions cannot:
autograd holds each op's incoming gradient until the op returns, and a caller holds each op's input until the next
op returns. Here every N x D fp32 buffer is freed, or overwritten in place, as soon as its compressed copy exists or
its last reader is done. What is alive when (T = N x hidden x 4 bytes; c = one row chunk, at most T / 8):

    forward, hidden layer   layer input h + aggregation adj @ h, overwritten by lin_l row chunk by chunk   2 T + c
                            (the aggregation's projection for its weight gradient: adj @ (h @ P), N x R)
                            BatchNorm input (quantized first) + activation output                        2 T
    forward, last layer     h + output and h @ W_l^T (N x classes each: the sparse product runs narrow)      T + ...
    backward, last layer    autograd's N x classes gradient g + g @ W_r + adj^T @ g (N x classes)           T + ...
    backward, hidden layer  masks and BatchNorm update the gradient in place (compiled: two passes over it;   T + c
                            eager: masked copies, then BatchNorm with its input dequantized in row chunks)
                            g + g @ W_l; g @ W_r written over g by row chunks; adj^T @ (g @ W_l) added in   2 T + c
                            place
    evaluation (no autograd, ``sage_conv``): h + aggregation overwritten by the output                      2 T + c

Throughout the backward autograd also holds the N x classes output gradient and the compressed copies (together
about 0.6 T at hidden 128 and 40 classes), so the training step peaks at about 2.7 T, against about 10.5 T for FP32
(tests/gnn/test_compressed_sage.py counts the allocator's bytes). bench_gnn.py reports the resident peak per phase.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd.function import FunctionCtx
from torch.profiler import record_function

from sustainml_exp.compress import (
    CompressionSpec,
    QTensor,
    projection_seed,
    quantize,
    resolve_backend,
)
from sustainml_exp.compress.activation import (
    BatchNormBackward,
    BatchNormForward,
    activation_backward,
    activation_forward,
    batch_norm_stats,
)
from sustainml_exp.compress.autograd import SPMM_LABEL, compress_linear_input, projected_weight_grad, sparse_matmul
from sustainml_kernels.quant_ref import rademacher_ref

__all__ = ["ROW_CHUNK_VALUES", "SAGEPlan", "compressed_sage", "row_chunks", "sage_conv"]

# Row chunks of the in-place linear layers hold at most an eighth of the buffer and at most this many values (16 MiB
# of fp32): few enough chunks (8 on arxiv-sized graphs) that per-op overheads stay small.
ROW_CHUNK_VALUES = 1 << 22
_CHUNKS_PER_BUFFER = 8


def row_chunks(n_rows: int, row_len: int) -> Iterator[tuple[int, int]]:
    rows = max(1, min(ROW_CHUNK_VALUES // max(1, row_len), -(-n_rows // _CHUNKS_PER_BUFFER)))
    for start in range(0, n_rows, rows):
        yield start, min(start + rows, n_rows)


def sage_conv(h: torch.Tensor, adj: torch.Tensor, w_l: torch.Tensor, b_l: torch.Tensor | None,
              w_r: torch.Tensor) -> torch.Tensor:
    """lin_l(adj @ h) + lin_r(h) holding at most two N x max(D, O) buffers.

    Narrowing (O < D, e.g. into the classes): adj @ (h @ W_l^T), so the sparse product runs on O columns and adds
    into the output in place. Otherwise the aggregation (whole: MKL's CSR matmul takes about twice as long in row
    chunks) is overwritten by lin_l row chunk by row chunk."""
    out_dim, in_dim = w_l.shape
    if out_dim < in_dim:
        out = torch.addmm(b_l, h, w_r.t()) if b_l is not None else h @ w_r.t()
        with record_function(SPMM_LABEL):
            return out.addmm_(adj, h @ w_l.t())
    agg = sparse_matmul(adj, h)
    if out_dim == in_dim:
        for start, stop in row_chunks(agg.shape[0], in_dim):
            rows = agg[start:stop]
            rows.copy_(rows @ w_l.t() if b_l is None else torch.addmm(b_l, rows, w_l.t()))
        out = agg
    else:
        out = agg @ w_l.t() if b_l is None else torch.addmm(b_l, agg, w_l.t())
    del agg
    return out.addmm_(h, w_r.t())


@dataclass
class SAGEPlan:
    """Everything of one compressed training forward that is not a differentiable input.

    seeds[layer][slot]: the rounding and mask seeds (model.op_seed) of each compressed tensor; running_stats: the
    BatchNorm running (mean, var) of each hidden layer, updated in place like nn.BatchNorm1d; capture, when a list,
    receives every layer's input (Table 5)."""

    adj: torch.Tensor
    adj_t: torch.Tensor
    spec: CompressionSpec
    num_layers: int
    seeds: list[dict[int, int]]
    dropout: float
    batch_norm: bool
    running_stats: list[tuple[torch.Tensor, torch.Tensor]]
    momentum: float
    eps: float
    slots: dict[str, int]
    capture: list[torch.Tensor] | None = None
    params_per_layer: int = field(default=3, init=False)  # lin_l.weight, lin_l.bias, lin_r.weight


class _Saved:
    """ctx.save_for_backward takes one flat list; this records which slice of it belongs to which name."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor | None] = []
        self.where: dict[tuple[int, str], tuple[int, int]] = {}
        self.qmeta: dict[tuple[int, str], Any] = {}

    def put(self, layer: int, name: str, *tensors: torch.Tensor | None) -> None:
        self.where[(layer, name)] = (len(self.tensors), len(tensors))
        self.tensors.extend(tensors)

    def put_q(self, layer: int, name: str, q: QTensor) -> None:
        self.put(layer, name, *q.tensors())
        self.qmeta[(layer, name)] = q.meta()


def _get(ctx: Any, saved: tuple[torch.Tensor, ...], layer: int, name: str) -> list[torch.Tensor]:
    start, count = ctx.where[(layer, name)]
    return list(saved[start:start + count])


def _get_q(ctx: Any, saved: tuple[torch.Tensor, ...], layer: int, name: str) -> QTensor:
    return QTensor.from_tensors(_get(ctx, saved, layer, name), ctx.qmeta[(layer, name)])


class _CompressedSAGE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, plan: SAGEPlan, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        spec = plan.spec
        backend = resolve_backend(spec.backend, x.device)
        saved = _Saved()
        h = x
        for i in range(plan.num_layers):
            w_l, b_l, w_r = params[3 * i: 3 * i + 3]
            seeds = plan.seeds[i]
            if plan.capture is not None:
                plan.capture.append(h.detach())
            saved.put(i, "weights", w_l, w_r)
            y = _conv_forward(h, plan, w_l, b_l, w_r, seeds, backend.name, saved, i)
            del h  # the layer input (the previous layer's output) dies here; x is the caller's
            if i == plan.num_layers - 1:
                ctx.save_for_backward(*saved.tensors)
                ctx.where, ctx.qmeta, ctx.plan, ctx.backend = saved.where, saved.qmeta, plan, backend.name
                return y
            bn = None
            if plan.batch_norm:
                bn_w, bn_b = params[3 * plan.num_layers + 2 * i: 3 * plan.num_layers + 2 * i + 2]
                mean, invstd = batch_norm_stats(y, *plan.running_stats[i], plan.momentum, plan.eps)
                q = quantize(y, spec.bits, spec.group_size(y.shape[1]), vm=spec.vm, seed=seeds[plan.slots["bn"]],
                             fp32_tail=spec.fp32_tail, backend=backend.name)
                saved.put_q(i, "bn_input", q)
                saved.put(i, "bn", bn_w, mean, invstd)
                bn = BatchNormForward(mean, invstd, bn_w, bn_b)
            # y (the BatchNorm input, now quantized) is overwritten or dies here
            h, relu_mask, drop_mask = activation_forward(y, bn, plan.dropout, seeds[plan.slots["dropout"]],
                                                         spec.lean, backend)
            del y
            saved.put(i, "relu", relu_mask)
            saved.put(i, "dropout", *(() if drop_mask is None else (drop_mask,)))
        raise ValueError(f"a GraphSAGE needs at least one layer, got num_layers={plan.num_layers}")

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        plan: SAGEPlan = ctx.plan
        spec = plan.spec
        backend = resolve_backend(ctx.backend, grad_out.device)
        saved = ctx.saved_tensors
        n_layers = plan.num_layers
        conv_grads: list[tuple[torch.Tensor, ...]] = [()] * n_layers
        bn_grads: list[tuple[torch.Tensor, ...]] = [()] * (n_layers - 1)
        g = grad_out.contiguous()
        for i in reversed(range(n_layers)):
            seeds = plan.seeds[i]
            if i < n_layers - 1:
                bn = None
                if plan.batch_norm:
                    bn_w, mean, invstd = _get(ctx, saved, i, "bn")
                    bn = BatchNormBackward(_get_q(ctx, saved, i, "bn_input"), mean, invstd, bn_w)
                (relu_mask,) = _get(ctx, saved, i, "relu")
                drop_mask = next(iter(_get(ctx, saved, i, "dropout")), None)
                g, bn_grads[i] = activation_backward(g, relu_mask, drop_mask, plan.dropout,
                                                     seeds[plan.slots["dropout"]], spec.lean, bn,
                                                     spec.grad_chunk_values, backend)
            need_input = i > 0 or ctx.needs_input_grad[1]
            # g becomes the gradient of the layer's input (None for the graph's features, which need none)
            conv_grads[i], g = _conv_backward(ctx, saved, plan, i, g, need_input, backend.name)
        grads: list[torch.Tensor | None] = [None, g]
        for layer_grads in conv_grads:
            grads.extend(layer_grads)
        if plan.batch_norm:
            for layer_grads in bn_grads:
                grads.extend(layer_grads)
        return tuple(grads)


def _conv_forward(h: torch.Tensor, plan: SAGEPlan, w_l: torch.Tensor, b_l: torch.Tensor, w_r: torch.Tensor,
                  seeds: dict[int, int], backend: str, saved: _Saved, layer: int) -> torch.Tensor:
    """lin_l(adj @ h) + lin_r(h), saving the projected, quantized h and adj @ h (the weight gradients' inputs)."""
    spec = plan.spec
    q, rp = compress_linear_input(h, spec, seeds[plan.slots["input"]], backend)
    saved.put(layer, "input_rp", *(() if rp is None else (rp,)))
    saved.put_q(layer, "input", q)
    # The aggregation's projection as adj @ (h @ P): the sparse product on R columns, never the N x D aggregation.
    seed = seeds[plan.slots["agg"]]
    d, kept = h.shape[1], spec.projected_dim(h.shape[1])
    rp = rademacher_ref(projection_seed(seed), d, kept, device=h.device) if kept < d else None
    agg_kept = sparse_matmul(plan.adj, h if rp is None else h @ rp)
    saved.put(layer, "agg_rp", *(() if rp is None or not spec.store_rp_matrix else (rp,)))
    saved.put_q(layer, "agg", quantize(agg_kept, spec.bits, spec.group_size(kept), vm=spec.vm, seed=seed,
                                       fp32_tail=spec.fp32_tail, backend=backend))
    del agg_kept
    return sage_conv(h, plan.adj, w_l, b_l, w_r)


def _conv_backward(ctx: Any, saved: tuple[torch.Tensor, ...], plan: SAGEPlan, layer: int, g: torch.Tensor,
                   need_input: bool, backend: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """((grad W_l, grad b_l, grad W_r), grad of the layer input or None)."""
    spec = plan.spec
    w_l, w_r = _get(ctx, saved, layer, "weights")
    d = w_l.shape[1]
    seeds = plan.seeds[layer]
    weight_grads = []
    for name in ("agg", "input"):
        q = _get_q(ctx, saved, layer, name)
        grad = projected_weight_grad(g, q, spec.grad_chunk_values, backend)
        if q.shape[1] < d:
            stored = _get(ctx, saved, layer, f"{name}_rp")
            rp = stored[0] if stored else rademacher_ref(projection_seed(seeds[plan.slots[name]]), d, q.shape[1],
                                                         device=g.device)
            grad = grad @ rp.t()  # (O x R) @ (R x D): never the N x D input estimate
        weight_grads.append(grad)
    grad_w_l, grad_w_r = weight_grads
    grads = (grad_w_l, g.sum(dim=0), grad_w_r)
    if not need_input:
        return grads, None
    out_dim = g.shape[1]
    if out_dim < d:  # adj^T @ g @ W_l: the sparse product on O columns, no N x D gradient of the aggregation
        g_x = g @ w_r
        g_x.addmm_(sparse_matmul(plan.adj_t, g), w_l)
        return grads, g_x
    g_agg = g @ w_l  # gradient of adj @ h
    if out_dim == d and layer < plan.num_layers - 1:
        # g is this Function's own buffer (not autograd's incoming gradient): reuse it for g @ W_r, chunk by chunk.
        for start, stop in row_chunks(g.shape[0], d):
            g[start:stop] = g[start:stop] @ w_r
        g_x = g
    else:
        g_x = g @ w_r
    with record_function(SPMM_LABEL):
        g_x.addmm_(plan.adj_t, g_agg)  # in place: adj_t @ g_agg would build two N x D temporaries on CPU
    return grads, g_x


def compressed_sage(plan: SAGEPlan, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """Output (N x classes, before log-softmax) of the compressed GraphSAGE training forward; ``params`` are every
    layer's (lin_l.weight, lin_l.bias, lin_r.weight), then every hidden BatchNorm's (weight, bias)."""
    return _CompressedSAGE.apply(plan, x, *params)
