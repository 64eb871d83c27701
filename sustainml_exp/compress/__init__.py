"""Compressed activations for memory-efficient training: block-wise stochastic INT-b quantization (EXACT,
i-Exact), variance-minimised INT2 levels, 1-bit masks, and the autograd functions that save only those."""

from sustainml_exp.compress.autograd import (
    compressed_batch_norm,
    compressed_linear,
    dropout_bitmask,
    projection_seed,
    relu_bitmask,
    spmm,
)
from sustainml_exp.compress.qtensor import QUANTIZE_BITS, QMeta, QTensor, dequantize, quantize
from sustainml_exp.compress.spec import QUANT_MODES, CompressionSpec, effective_G_R
from sustainml_exp.compress.vm import (
    clipped_normal_sigma,
    closed_form_inner_level,
    cn_bin_probs,
    cn_density,
    expected_sr_variance,
    optimal_inner_level,
    variance_reduction,
)

__all__ = [
    "QUANTIZE_BITS",
    "QUANT_MODES",
    "CompressionSpec",
    "QMeta",
    "QTensor",
    "clipped_normal_sigma",
    "closed_form_inner_level",
    "cn_bin_probs",
    "cn_density",
    "compressed_batch_norm",
    "compressed_linear",
    "dequantize",
    "dropout_bitmask",
    "effective_G_R",
    "expected_sr_variance",
    "optimal_inner_level",
    "projection_seed",
    "quantize",
    "relu_bitmask",
    "spmm",
    "variance_reduction",
]
