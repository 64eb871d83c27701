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
from sustainml_exp.compress.backend import Backend, resolve_backend, triton_usable
from sustainml_exp.compress.qtensor import (
    QUANTIZE_BITS,
    QMeta,
    QTensor,
    dequantize,
    dequantize_row_chunks,
    dequantize_rows,
    project_quantize,
    quantize,
    row_chunk_alignment,
)
from sustainml_exp.compress.spec import COMPRESS_BACKENDS, QUANT_MODES, CompressionSpec, effective_G_R
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
    "COMPRESS_BACKENDS",
    "QUANTIZE_BITS",
    "QUANT_MODES",
    "Backend",
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
    "dequantize_row_chunks",
    "dequantize_rows",
    "dropout_bitmask",
    "effective_G_R",
    "expected_sr_variance",
    "optimal_inner_level",
    "project_quantize",
    "projection_seed",
    "quantize",
    "relu_bitmask",
    "resolve_backend",
    "row_chunk_alignment",
    "spmm",
    "triton_usable",
    "variance_reduction",
]
