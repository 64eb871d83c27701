"""Compressed GraphSAGE training - forward and backward of the whole network - as one autograd Function.

It saves exactly what the per-op functions of ``sustainml_exp.compress`` save (the projected INT-b layer input and
aggregation of every layer, the INT-b BatchNorm input, 1-bit ReLU and dropout masks), with the same seeds, so
``act_mem_mb`` is unchanged. Being one Function, it owns every intermediate buffer, which per-op Functions cannot:
autograd holds each op's incoming gradient until the op returns, and a caller holds each op's input until the next
op returns. Here every N x D fp32 buffer is freed, or overwritten in place, as soon as its compressed copy exists
or its last reader is done, so that at most about two of them are alive at any time (T = N x hidden x 4 bytes):

    forward, per layer:   layer input + output, the aggregation in row chunks       2 T  (+ one chunk)
                          BatchNorm input + output; then ReLU and dropout outputs   2 T
    backward, per layer:  dropout, ReLU masks: gradient in, gradient out            2 T
                          BatchNorm: gradient updated in place, input dequantized   1 T  (+ one chunk, twice)
                            in row chunks (its reductions first, then the update)
                          linears: gradient + its product with W_l; the product     2 T  (+ one chunk)
                            with W_r written over the gradient row chunk by chunk,
                            then the aggregation's transpose added in place
                          (the last layer's gradient is N x classes and engine-held: + that)

``peak_phase_model`` states this per phase so a peak can be estimated from shapes alone.
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
    dequantize_row_chunks,
    project_quantize,
    projection_seed,
    quantize,
    resolve_backend,
)
from sustainml_exp.compress.autograd import SPMM_LABEL, projected_weight_grad
from sustainml_exp.compress.backend import dropout_scale
from sustainml_exp.compress.qtensor import DEQUANTIZE_LABEL, QUANTIZE_LABEL
from sustainml_exp.families.gnn_blockquant.data import csr_rows
from sustainml_kernels.quant_ref import rademacher_ref

__all__ = ["ROW_CHUNK_VALUES", "SAGEPlan", "compressed_sage", "row_chunks", "sage_conv"]

# Row chunks of the aggregation and of the in-place gradient updates hold about this many values (4 MiB of fp32):
# small next to an N x D buffer on arxiv-sized graphs (21.7M values), large enough to keep matmuls efficient.
ROW_CHUNK_VALUES = 1 << 20


def row_chunks(n_rows: int, row_len: int, chunk_values: int = ROW_CHUNK_VALUES) -> Iterator[tuple[int, int]]:
    step = max(1, chunk_values // max(1, row_len))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def sage_conv(h: torch.Tensor, adj: torch.Tensor, w_l: torch.Tensor, b_l: torch.Tensor | None, w_r: torch.Tensor,
              agg_rows: torch.Tensor | None = None, project: torch.Tensor | None = None) -> torch.Tensor:
    """lin_l(adj @ h) + lin_r(h), with the aggregation computed in row chunks (never N x D at once).

    ``agg_rows`` (N x R), when given, receives the aggregation's rows, multiplied by ``project`` (D x R) if given."""
    out = torch.addmm(b_l, h, w_r.t()) if b_l is not None else h @ w_r.t()
    chunk = None
    for start, stop in row_chunks(h.shape[0], h.shape[1]):
        if chunk is None or chunk.shape[0] != stop - start:
            chunk = torch.empty(stop - start, h.shape[1], dtype=h.dtype, device=h.device)
        # Into a buffer with beta=0: adj @ h would also build a second N x D temporary (CSR matmul on CPU).
        with record_function(SPMM_LABEL):
            chunk.addmm_(csr_rows(adj, start, stop), h, beta=0)
        if agg_rows is not None:
            if project is None:
                agg_rows[start:stop] = chunk
            else:
                torch.mm(chunk, project, out=agg_rows[start:stop])
        out[start:stop].addmm_(chunk, w_l.t())
    return out


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
            if plan.batch_norm:
                bn_w, bn_b = params[3 * plan.num_layers + 2 * i: 3 * plan.num_layers + 2 * i + 2]
                running_mean, running_var = plan.running_stats[i]
                normed, mean, invstd = torch.native_batch_norm(y, bn_w, bn_b, running_mean, running_var, True,
                                                               plan.momentum, plan.eps)
                q = quantize(y, spec.bits, spec.group_size(y.shape[1]), vm=spec.vm, seed=seeds[plan.slots["bn"]],
                             fp32_tail=spec.fp32_tail, backend=backend.name)
                saved.put_q(i, "bn_input", q)
                saved.put(i, "bn", bn_w, mean, invstd)
                y = normed  # the BatchNorm input dies here: its quantized copy exists
                del normed
            with record_function(QUANTIZE_LABEL):
                h, relu_mask = backend.relu_pack(y)
                del y  # the BatchNorm output dies here
                saved.put(i, "relu", relu_mask)
                if plan.dropout > 0:
                    seed = seeds[plan.slots["dropout"]]
                    if spec.lean:  # the keep-mask is a function of the seed: regenerated in backward, not stored
                        h = backend.dropout_apply(h, plan.dropout, seed)
                    else:
                        h, drop_mask = backend.dropout_pack(h, plan.dropout, seed)
                        saved.put(i, "dropout", drop_mask)
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
                with record_function(DEQUANTIZE_LABEL):
                    if plan.dropout > 0:
                        if spec.lean:
                            g = backend.dropout_apply(g, plan.dropout, seeds[plan.slots["dropout"]])
                        else:
                            (drop_mask,) = _get(ctx, saved, i, "dropout")
                            g = backend.masked_scale(g, drop_mask, dropout_scale(plan.dropout))
                    (relu_mask,) = _get(ctx, saved, i, "relu")
                    g = backend.masked_scale(g, relu_mask, 1.0)
                if plan.batch_norm:
                    bn_w, mean, invstd = _get(ctx, saved, i, "bn")
                    bn_grads[i] = _batch_norm_backward_(g, _get_q(ctx, saved, i, "bn_input"), mean, invstd, bn_w,
                                                        spec.grad_chunk_values, backend.name)
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
    n, d = h.shape
    kept = spec.projected_dim(d)
    group_size = spec.group_size(kept)
    quant = dict(vm=spec.vm, fp32_tail=spec.fp32_tail, backend=backend)
    seed = seeds[plan.slots["input"]]
    if kept < d and not spec.store_rp_matrix:  # the projection is regenerated from its seed in backward
        q = project_quantize(h, kept, projection_seed(seed), spec.bits, group_size, seed=seed, **quant)
        saved.put(layer, "x_rp")
    else:
        rp = rademacher_ref(projection_seed(seed), d, kept, device=h.device) if kept < d else None
        q = quantize(h if rp is None else h @ rp, spec.bits, group_size, seed=seed, **quant)
        saved.put(layer, "x_rp", *(() if rp is None else (rp,)))
    saved.put_q(layer, "x", q)
    seed = seeds[plan.slots["agg"]]
    rp = rademacher_ref(projection_seed(seed), d, kept, device=h.device) if kept < d else None
    agg_kept = torch.empty(n, kept, dtype=torch.float32, device=h.device)
    out = sage_conv(h, plan.adj, w_l, b_l, w_r, agg_rows=agg_kept, project=rp)
    saved.put_q(layer, "agg", quantize(agg_kept, spec.bits, group_size, seed=seed, **quant))
    saved.put(layer, "agg_rp", *(() if rp is None or not spec.store_rp_matrix else (rp,)))
    return out


def _conv_backward(ctx: Any, saved: tuple[torch.Tensor, ...], plan: SAGEPlan, layer: int, g: torch.Tensor,
                   need_input: bool, backend: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """((grad W_l, grad b_l, grad W_r), grad of the layer input or None)."""
    spec = plan.spec
    w_l, w_r = _get(ctx, saved, layer, "weights")
    d = w_l.shape[1]
    seeds = plan.seeds[layer]
    weight_grads = []
    for name, slot in (("agg", plan.slots["agg"]), ("x", plan.slots["input"])):
        q = _get_q(ctx, saved, layer, name)
        grad = projected_weight_grad(g, q, spec.grad_chunk_values, backend)
        if q.shape[1] < d:
            stored = _get(ctx, saved, layer, f"{name}_rp")
            rp = stored[0] if stored else rademacher_ref(projection_seed(seeds[slot]), d, q.shape[1], device=g.device)
            grad = grad @ rp.t()  # (O x R) @ (R x D): never the N x D input estimate
        weight_grads.append(grad)
    grad_w_l, grad_w_r = weight_grads
    grads = (grad_w_l, g.sum(dim=0), grad_w_r)
    if not need_input:
        return grads, None
    g_agg = g @ w_l  # gradient of adj @ h
    if g.shape[1] == d and layer < plan.num_layers - 1:
        # g is this Function's own buffer (not autograd's incoming gradient): reuse it for g @ W_r, chunk by chunk.
        for start, stop in row_chunks(g.shape[0], d):
            g[start:stop] = g[start:stop] @ w_r
        g_x = g
    else:
        g_x = g @ w_r
    with record_function(SPMM_LABEL):
        g_x.addmm_(plan.adj_t, g_agg)  # in place: adj_t @ g_agg would build two N x D temporaries on CPU
    return grads, g_x


def _batch_norm_backward_(g: torch.Tensor, q: QTensor, mean: torch.Tensor, invstd: torch.Tensor,
                          weight: torch.Tensor, chunk_values: int | None, backend: str) -> tuple[torch.Tensor, ...]:
    """native_batch_norm_backward (training) with the input dequantized row chunk by row chunk, writing the input
    gradient over ``g``; returns (grad weight, grad bias).

    grad_in = (g - mean(g) - (x - mean) * k) * invstd * w, k = sum(g * (x - mean)) * invstd^2 / N"""
    n = g.shape[0]
    sum_g = g.sum(dim=0)
    dot = torch.zeros_like(mean)
    for start, stop, x_hat in dequantize_row_chunks(q, chunk_values, backend=backend):
        dot += (g[start:stop] * x_hat.sub_(mean)).sum(dim=0)
    k = dot * invstd * invstd / n
    mean_g = sum_g / n
    scale = invstd * weight
    for start, stop, x_hat in dequantize_row_chunks(q, chunk_values, backend=backend):
        g[start:stop].sub_(mean_g).sub_(x_hat.sub_(mean).mul_(k)).mul_(scale)
    return dot * invstd, sum_g


def compressed_sage(plan: SAGEPlan, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """Output (N x classes, before log-softmax) of the compressed GraphSAGE training forward; ``params`` are every
    layer's (lin_l.weight, lin_l.bias, lin_r.weight), then every hidden BatchNorm's (weight, bias)."""
    return _CompressedSAGE.apply(plan, x, *params)
