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

from sustainml_exp.compress.qtensor import QTensor, dequantize, quantize
from sustainml_exp.compress.spec import CompressionSpec
from sustainml_kernels.quant_ref import (
    dropout_mask_ref,
    pack_mask_ref,
    rademacher_ref,
    substream_seed,
    unpack_mask_ref,
)

__all__ = [
    "compressed_batch_norm",
    "compressed_linear",
    "dropout_bitmask",
    "projection_seed",
    "relu_bitmask",
    "spmm",
]

_PROJECTION_STREAM = 1


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
        ctx.project, ctx.in_dim, ctx.kept_dim, ctx.seed = project, in_dim, kept_dim, seed
        ctx.has_rp, ctx.qmeta = False, None

        saved: list[torch.Tensor | None] = [weight if ctx.needs_input_grad[0] else None]
        if ctx.needs_input_grad[1]:
            kept = x.reshape(-1, in_dim).to(torch.float32)
            if project:
                rp = rademacher_ref(projection_seed(seed), in_dim, kept_dim, device=x.device)
                kept = kept @ rp
                if spec.store_rp_matrix:
                    saved.append(rp)
                    ctx.has_rp = True
            q = quantize(kept, spec.bits, spec.group_size(kept_dim), vm=spec.vm, seed=seed,
                         fp32_tail=spec.fp32_tail)
            del kept
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
            kept_hat = dequantize(QTensor.from_tensors(rest, ctx.qmeta))
            grad_w = grad_rows.t().to(torch.float32) @ kept_hat
            if ctx.project:
                if rp is None:
                    rp = rademacher_ref(projection_seed(ctx.seed), ctx.in_dim, ctx.kept_dim, device=grad_out.device)
                grad_w = grad_w @ rp.t()  # (O x R) @ (R x D): never materialises the N x D input estimate
            grad_w = grad_w.to(grad_out.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(dim=0)
        return grad_x, grad_w, grad_b, None, None


def compressed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: CompressionSpec,
                      seed: int) -> torch.Tensor:
    """x @ W^T + b, saving for backward only the randomly projected, block-quantized input.

    The input rows (D values) are projected onto R = spec.projected_dim(D) columns by a Rademacher matrix drawn
    from ``projection_seed(seed)`` (no projection when R == D) and quantized with ``seed``. grad_input uses the
    exact weights; grad_weight = grad_out^T @ (dequantized projection @ P^T) is unbiased. A spec that is not
    enabled falls back to ``F.linear``.
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
        ctx.eps, ctx.dtype, ctx.qmeta = eps, x.dtype, None
        saved: list[torch.Tensor | None] = [weight, save_mean, save_invstd]
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[3]:
            q = quantize(x, spec.bits, spec.group_size(x.shape[1]), vm=spec.vm, seed=seed, fp32_tail=spec.fp32_tail)
            saved.extend(q.tensors())
            ctx.qmeta = q.meta()
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, save_mean, save_invstd, *q_tensors = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        grad_x = grad_w = grad_b = None
        if ctx.qmeta is not None:
            x_hat = dequantize(QTensor.from_tensors(q_tensors, ctx.qmeta)).to(ctx.dtype)
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
    def forward(ctx: FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = tuple(x.shape)
        ctx.save_for_backward(pack_mask_ref(x > 0))
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (packed,) = ctx.saved_tensors
        positive = unpack_mask_ref(packed, ctx.shape)
        return torch.where(positive, grad_out, torch.zeros((), dtype=grad_out.dtype, device=grad_out.device))


def relu_bitmask(x: torch.Tensor) -> torch.Tensor:
    """ReLU that saves 1 bit per element (x > 0) for backward."""
    return _ReLUBitmask.apply(x)


class _DropoutBitmask(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        keep = dropout_mask_ref(seed, tuple(x.shape), p, device=x.device)
        ctx.shape, ctx.scale = tuple(x.shape), _dropout_scale(p)
        ctx.save_for_backward(pack_mask_ref(keep))
        return _apply_keep(x, keep, ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (packed,) = ctx.saved_tensors
        return _apply_keep(grad_out, unpack_mask_ref(packed, ctx.shape), ctx.scale), None, None


def _dropout_scale(p: float) -> float:
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _apply_keep(t: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.where(keep, t * scale, torch.zeros((), dtype=t.dtype, device=t.device))


def dropout_bitmask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Dropout whose keep-mask is a function of ``seed`` (``dropout_mask_ref``) and is saved as 1 bit per element:
    x * mask / (1 - p). p = 0 returns x unchanged and saves nothing."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    if p == 0.0:
        return x
    return _DropoutBitmask.apply(x, p, seed)


# --------------------------------------------------------------------------------------------- graph


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(adj_t)  # graph data, not an activation; sparse, so memory ledgers skip it
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, None, torch.Tensor | None]:
        (adj_t,) = ctx.saved_tensors
        return None, None, (adj_t @ grad_out.contiguous()) if ctx.needs_input_grad[2] else None


def spmm(adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """adj @ x for a sparse (CSR) N x N ``adj``; backward multiplies by ``adj_t`` (its transpose, also CSR)
    instead of transposing on the fly. Only the adjacency is kept for backward, no activation."""
    return _SpMM.apply(adj, adj_t, x)
