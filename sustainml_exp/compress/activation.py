"""BatchNorm -> ReLU -> dropout of an N x D activation with 1-bit masks, forward and backward, for a caller that owns
its buffers (``families.gnn_blockquant.compressed_sage``): the activation is overwritten in place, the backward
updates the incoming gradient in place, and the BatchNorm input is read back from its quantized copy.

The reference is the composition of the backend's primitives (``relu_pack``, ``dropout_pack``, ``masked_scale``,
``dequantize_row_chunks``). The compiled backend runs the same arithmetic fused: the forward in one pass (normalise,
ReLU, dropout, both masks packed), the backward in two (masks applied and BatchNorm's two reductions, with the input
dequantized on the fly; then the input gradient), instead of about ten passes over N x D buffers. Activations and
masks are the same bytes either way; the backward's reductions are summed in a different order (a few ulps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.profiler import record_function

from sustainml_exp.compress.backend import Backend, dropout_scale
from sustainml_exp.compress.qtensor import DEQUANTIZE_LABEL, QUANTIZE_LABEL, QTensor, dequantize_row_chunks

__all__ = ["BatchNormBackward", "BatchNormForward", "activation_backward", "activation_forward", "batch_norm_stats",
           "bn_apply"]


@dataclass(frozen=True)
class BatchNormForward:
    mean: torch.Tensor
    invstd: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor


@dataclass(frozen=True)
class BatchNormBackward:
    q_input: QTensor  # the quantized BatchNorm input (N x D)
    mean: torch.Tensor
    invstd: torch.Tensor
    weight: torch.Tensor


def batch_norm_stats(y: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / sqrt(var + eps)) of the columns of y, as training-mode BatchNorm normalises (biased variance),
    without computing BatchNorm's output; the running statistics are updated in place (unbiased variance), as
    nn.BatchNorm1d does. Same statistics kernel as torch's CPU BatchNorm (torch.var_mean is ~8x slower here)."""
    mean, var = torch.batch_norm_update_stats(y, running_mean, running_var, momentum)
    return mean, (var + eps).sqrt_().reciprocal_()


def bn_apply(y: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor) -> torch.Tensor:
    """BatchNorm's affine normalisation, in this order of fp32 operations: ((y - mean) * invstd) * weight + bias."""
    return (y - mean) * invstd * weight + bias


def activation_forward(y: torch.Tensor, bn: BatchNormForward | None, p: float, seed: int, lean: bool,
                       backend: Backend) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dropout(relu(bn(y))), packed ReLU mask, packed dropout keep-mask or None). ``y`` is consumed: its buffer
    may hold the result. p = 0 skips dropout; ``lean`` regenerates its mask in backward instead of returning it."""
    with record_function(QUANTIZE_LABEL):
        if backend.name == "torch-compiled":
            from sustainml_exp.compress.compiled import activation_forward_fused

            fused = activation_forward_fused(y, bn, p, seed, lean)
            if fused is not None:
                return fused
        normed = y if bn is None else bn_apply(y, bn.mean, bn.invstd, bn.weight, bn.bias)
        del y
        h, relu_mask = backend.relu_pack(normed)
        del normed
        drop_mask = None
        if p > 0:
            if lean:
                h = backend.dropout_apply(h, p, seed)
            else:
                h, drop_mask = backend.dropout_pack(h, p, seed)
        return h, relu_mask, drop_mask


def activation_backward(g: torch.Tensor, relu_mask: torch.Tensor, drop_mask: torch.Tensor | None, p: float,
                        seed: int, lean: bool, bn: BatchNormBackward | None, chunk_values: int | None,
                        backend: Backend) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(gradient of y, (grad BatchNorm weight, grad bias) or None) from the gradient of activation_forward's
    output. ``g`` must be the caller's own buffer: it may be overwritten."""
    with record_function(DEQUANTIZE_LABEL):
        if backend.name == "torch-compiled":
            from sustainml_exp.compress.compiled import activation_backward_fused

            fused = activation_backward_fused(g, relu_mask, drop_mask, p, seed, lean, bn)
            if fused is not None:
                return g, fused
        if p > 0:
            g = backend.dropout_apply(g, p, seed) if lean else backend.masked_scale(g, drop_mask, dropout_scale(p))
        g = backend.masked_scale(g, relu_mask, 1.0)
    if bn is None:
        return g, None
    return g, _batch_norm_backward_(g, bn, chunk_values, backend.name)


def _batch_norm_backward_(g: torch.Tensor, bn: BatchNormBackward, chunk_values: int | None,
                          backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """native_batch_norm_backward (training) with the input dequantized row chunk by row chunk, writing the input
    gradient over ``g``; returns (grad weight, grad bias).

    grad_in = (g - mean(g) - (x - mean) * k) * invstd * w, k = sum(g * (x - mean)) * invstd^2 / N"""
    sum_g = g.sum(dim=0)
    dot = torch.zeros_like(bn.mean)
    for start, stop, x_hat in dequantize_row_chunks(bn.q_input, chunk_values, backend=backend):
        dot += (g[start:stop] * x_hat.sub_(bn.mean)).sum(dim=0)
    mean_g, k, scale = bn_backward_coefficients(sum_g, dot, bn, g.shape[0])
    for start, stop, x_hat in dequantize_row_chunks(bn.q_input, chunk_values, backend=backend):
        g[start:stop].sub_(mean_g).sub_(x_hat.sub_(bn.mean).mul_(k)).mul_(scale)
    return dot * bn.invstd, sum_g


def bn_backward_coefficients(sum_g: torch.Tensor, dot: torch.Tensor, bn: BatchNormBackward,
                             n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean(g), k, invstd * w) of the input gradient (g - mean(g) - (x - mean) * k) * invstd * w, from the column
    sums of g and of g * (x - mean)."""
    return sum_g / n, dot * bn.invstd * bn.invstd / n, bn.invstd * bn.weight
