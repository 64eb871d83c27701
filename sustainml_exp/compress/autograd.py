"""Autograd functions whose saved activations are compressed (EXACT / i-Exact style).

Every tensor kept for backward goes through ``ctx.save_for_backward`` so that ``saved_tensors_hooks`` see
exactly what is stored; ``ctx`` attributes hold only plain Python values (shapes, flags, seeds). No fp32 copy
of an activation survives the forward. Random streams are regenerated from integer seeds, so the same seed
gives the same compressed bytes on every run and device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx
from torch.profiler import record_function

from sustainml_exp.compress.backend import dropout_scale, resolve_backend
from sustainml_exp.compress.qtensor import QTensor, dequantize, dequantize_row_chunks, project_quantize, quantize
from sustainml_exp.compress.spec import CompressionSpec
from sustainml_kernels.quant_ref import rademacher_ref, substream_seed

__all__ = [
    "SPMM_LABEL",
    "compress_linear_input",
    "compressed_batch_norm",
    "compressed_linear",
    "dropout_bitmask",
    "projected_weight_grad",
    "projection_seed",
    "relu_bitmask",
    "sparse_matmul",
    "spmm",
]

_PROJECTION_STREAM = 1
SPMM_LABEL = "spmm"  # torch.profiler range around every sparse matmul with the adjacency (bench_gnn --profile)
_DEFAULT_SPEC = CompressionSpec()


def projection_seed(seed: int) -> int:
    """Seed of the Rademacher projection of an op whose rounding noise uses ``seed``.

    The two streams must be independent: signs drawn from the same hashes as the rounding noise would make the
    noise depend on the projection and bias the weight gradient."""
    return substream_seed(seed, _PROJECTION_STREAM)


# --------------------------------------------------------------------------------------------- linear


class _CompressedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                spec: CompressionSpec, seed: int) -> torch.Tensor:
        in_dim = x.shape[-1]
        kept_dim = spec.projected_dim(in_dim)
        project = kept_dim < in_dim
        backend = resolve_backend(spec.backend, x.device).name
        ctx.project, ctx.in_dim, ctx.kept_dim, ctx.seed, ctx.backend = project, in_dim, kept_dim, seed, backend
        ctx.chunk_values = spec.grad_chunk_values
        ctx.has_rp, ctx.qmeta = False, None

        # grad_input reads only the weight, grad_weight only the compressed input, grad_bias nothing.
        saved: list[torch.Tensor | None] = [weight if ctx.needs_input_grad[0] else None]
        if ctx.needs_input_grad[1]:
            q, rp = compress_linear_input(x.reshape(-1, in_dim), spec, seed, backend)
            if rp is not None:
                saved.append(rp)
                ctx.has_rp = True
            saved.extend(q.tensors())
            ctx.qmeta = q.meta()
        ctx.save_for_backward(*saved)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, *rest = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            rp = rest.pop(0) if ctx.has_rp else None
            grad_w = projected_weight_grad(grad_rows, QTensor.from_tensors(rest, ctx.qmeta), ctx.chunk_values,
                                            ctx.backend)
            if ctx.project:
                if rp is None:
                    rp = rademacher_ref(projection_seed(ctx.seed), ctx.in_dim, ctx.kept_dim, device=grad_out.device)
                grad_w = grad_w @ rp.t()  # (O x R) @ (R x D): never materialises the N x D input estimate
            grad_w = grad_w.to(grad_out.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(dim=0)
        return grad_x, grad_w, grad_b, None, None


def compress_linear_input(x2d: torch.Tensor, spec: CompressionSpec, seed: int,
                          backend: str) -> tuple[QTensor, torch.Tensor | None]:
    """(quantized projection of the N x D input of a linear layer, the D x R projection when the spec stores it).

    The projection (R = spec.projected_dim(D) columns; none when R == D) is drawn from ``projection_seed(seed)``
    and, unless ``spec.store_rp_matrix``, regenerated from it in backward: a backend with a fused kernel then never
    writes the N x R projection out."""
    in_dim = x2d.shape[1]
    kept_dim = spec.projected_dim(in_dim)
    group_size = spec.group_size(kept_dim)
    if kept_dim < in_dim and not spec.store_rp_matrix:
        return project_quantize(x2d, kept_dim, projection_seed(seed), spec.bits, group_size, vm=spec.vm, seed=seed,
                                fp32_tail=spec.fp32_tail, backend=backend), None
    kept, rp = x2d.to(torch.float32), None
    if kept_dim < in_dim:
        rp = rademacher_ref(projection_seed(seed), in_dim, kept_dim, device=x2d.device)
        kept = kept @ rp
    return quantize(kept, spec.bits, group_size, vm=spec.vm, seed=seed, fp32_tail=spec.fp32_tail,
                    backend=backend), rp


def projected_weight_grad(grad_rows: torch.Tensor, q: QTensor, chunk_values: int | None,
                           backend: str) -> torch.Tensor:
    """fp32 grad_rows^T @ dequantize(q) (O x R), accumulated over row chunks of q so that at most one chunk of
    the dequantized N x R input exists at a time (it, not the packed bytes, would set the backward's peak)."""
    grad_w: torch.Tensor | None = None
    for row_start, row_stop, kept_hat in dequantize_row_chunks(q, chunk_values, backend=backend):
        grad_chunk = grad_rows[row_start:row_stop].t().to(torch.float32)
        if grad_w is None:
            grad_w = grad_chunk @ kept_hat
        else:
            grad_w.addmm_(grad_chunk, kept_hat)
        del kept_hat
    if grad_w is None:  # no rows at all
        grad_w = torch.zeros(grad_rows.shape[1], q.shape[1], dtype=torch.float32, device=grad_rows.device)
    return grad_w


def compressed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: CompressionSpec,
                      seed: int) -> torch.Tensor:
    """x @ W^T + b, saving for backward only the randomly projected, block-quantized input.

    The input rows (D values) are projected onto R = spec.projected_dim(D) columns by a Rademacher matrix drawn
    from ``projection_seed(seed)`` (no projection when R == D) and quantized with ``seed``. grad_input uses the
    exact weights; grad_weight = grad_out^T @ (dequantized projection @ P^T) is unbiased and is accumulated over
    row chunks of ``spec.grad_chunk_values`` values. A spec that is not enabled falls back to ``F.linear``.
    """
    if not spec.enabled:
        return F.linear(x, weight, bias)
    return _CompressedLinear.apply(x, weight, bias, spec, seed)


# --------------------------------------------------------------------------------------------- batch norm


class _CompressedBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, running_mean: torch.Tensor | None,
                running_var: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
                momentum: float, eps: float, spec: CompressionSpec, seed: int) -> torch.Tensor:
        out, save_mean, save_invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True,
                                                              momentum, eps)
        backend = resolve_backend(spec.backend, x.device).name
        ctx.eps, ctx.dtype, ctx.qmeta, ctx.backend = eps, x.dtype, None, backend
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        # grad_bias is a plain sum of grad_out: it reads nothing. grad_input and grad_weight read the input and
        # the batch statistics; only grad_input reads the weight.
        saved: list[torch.Tensor | None] = []
        if need_x or need_w:
            q = quantize(x, spec.bits, spec.group_size(x.shape[1]), vm=spec.vm, seed=seed, fp32_tail=spec.fp32_tail,
                         backend=backend)
            saved = [weight if need_x else None, save_mean, save_invstd, *q.tensors()]
            ctx.qmeta = q.meta()
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        grad_x = grad_w = grad_b = None
        if ctx.qmeta is not None:
            weight, save_mean, save_invstd, *q_tensors = ctx.saved_tensors
            # Not chunked like the linear backward: native_batch_norm_backward needs the whole N x D input at
            # once (its per-feature reductions and grad_input share one pass), so the full x_hat is dequantized.
            x_hat = dequantize(QTensor.from_tensors(q_tensors, ctx.qmeta), backend=ctx.backend).to(ctx.dtype)
            grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
                grad_out.contiguous(), x_hat, weight, None, None, save_mean, save_invstd, True, ctx.eps,
                [need_x, need_w, need_b])
        elif need_b:
            grad_b = grad_out.sum(dim=0)
        return (grad_x if need_x else None, None, None, grad_w if need_w else None, grad_b if need_b else None,
                None, None, None, None)


def compressed_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                          weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float, eps: float,
                          spec: CompressionSpec, seed: int) -> torch.Tensor:
    """Training-mode BatchNorm over the rows of an N x D input (running statistics updated in place, like
    ``nn.BatchNorm1d``) that saves its input block-quantized without projection (blocks of
    spec.group_size(D) values) plus the per-feature batch mean and inverse std."""
    if x.dim() != 2:
        raise ValueError(f"compressed_batch_norm expects an N x D input, got shape {tuple(x.shape)}")
    if momentum is None:
        raise ValueError("compressed_batch_norm needs a float momentum (cumulative averaging is not supported)")
    if not spec.enabled:
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    return _CompressedBatchNorm.apply(x, running_mean, running_var, weight, bias, momentum, eps, spec, seed)


# --------------------------------------------------------------------------------------------- masks


class _ReLUBitmask(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, backend: str) -> torch.Tensor:
        ops = resolve_backend(backend, x.device)
        ctx.backend = ops.name
        out, packed = ops.relu_pack(x)
        ctx.save_for_backward(packed)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (packed,) = ctx.saved_tensors
        return resolve_backend(ctx.backend, grad_out.device).masked_scale(grad_out, packed, 1.0), None


def relu_bitmask(x: torch.Tensor, spec: CompressionSpec | None = None) -> torch.Tensor:
    """ReLU that saves 1 bit per element (x > 0) for backward; ``spec.backend`` picks the implementation."""
    return _ReLUBitmask.apply(x, (spec or _DEFAULT_SPEC).backend)


class _DropoutBitmask(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, p: float, seed: int, backend: str, lean: bool) -> torch.Tensor:
        ops = resolve_backend(backend, x.device)
        ctx.backend, ctx.p, ctx.seed, ctx.scale, ctx.lean = ops.name, p, seed, dropout_scale(p), lean
        if lean:  # the keep-mask is a function of the seed: regenerate it in backward instead of storing it
            return ops.dropout_apply(x, p, seed)
        out, packed = ops.dropout_pack(x, p, seed)
        ctx.save_for_backward(packed)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        ops = resolve_backend(ctx.backend, grad_out.device)
        if ctx.lean:
            grad_x = ops.dropout_apply(grad_out, ctx.p, ctx.seed)
        else:
            (packed,) = ctx.saved_tensors
            grad_x = ops.masked_scale(grad_out, packed, ctx.scale)
        return grad_x, None, None, None, None


def dropout_bitmask(x: torch.Tensor, p: float, seed: int, spec: CompressionSpec | None = None) -> torch.Tensor:
    """Dropout whose keep-mask is a function of ``seed`` (``dropout_mask_ref``) and is saved as 1 bit per element:
    x * mask / (1 - p); with ``spec.lean`` nothing is saved and backward regenerates the mask from the seed (same
    gradient). p = 0 returns x unchanged and saves nothing."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    if p == 0.0:
        return x
    spec = spec or _DEFAULT_SPEC
    return _DropoutBitmask.apply(x, p, seed, spec.backend, spec.lean)


# --------------------------------------------------------------------------------------------- graph


def sparse_matmul(adj: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """adj @ dense for a sparse CSR ``adj``, written into a fresh buffer: on CPU ``adj @ dense`` also builds a
    second temporary of the result's size (same values, twice the memory and slower)."""
    out = torch.empty(adj.shape[0], dense.shape[1], dtype=dense.dtype, device=dense.device)
    with record_function(SPMM_LABEL):
        return out.addmm_(adj, dense, beta=0)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(adj_t)  # graph data, not an activation; sparse, so memory ledgers skip it
        return sparse_matmul(adj, x)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, None, torch.Tensor | None]:
        (adj_t,) = ctx.saved_tensors
        return None, None, sparse_matmul(adj_t, grad_out.contiguous()) if ctx.needs_input_grad[2] else None


def spmm(adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """adj @ x for a sparse (CSR) N x N ``adj``; backward multiplies by ``adj_t`` (its transpose, also CSR)
    instead of transposing on the fly. Only the adjacency is kept for backward, no activation."""
    return _SpMM.apply(adj, adj_t, x)
