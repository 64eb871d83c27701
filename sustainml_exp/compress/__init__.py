"""Compressed activations for memory-efficient training: block-wise stochastic INT-b quantization (EXACT,
i-Exact), variance-minimised INT2 levels, 1-bit masks, and the autograd functions that save only those.

Names load on first use (PEP 562), so ``sustainml_exp.compress.spec`` (the allowed quantization modes, bits and
backends that the typed config checks at start-up) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(("compressed_batch_norm", "compressed_linear", "dropout_bitmask", "projection_seed",
                     "relu_bitmask", "spmm"), "autograd"),
    **dict.fromkeys(("Backend", "resolve_backend", "triton_usable"), "backend"),
    **dict.fromkeys(("QMeta", "QTensor", "dequantize", "dequantize_row_chunks", "dequantize_rows",
                     "project_quantize", "quantize", "row_chunk_alignment"), "qtensor"),
    **dict.fromkeys(("COMPRESS_BACKENDS", "QUANT_BITS", "QUANT_MODES", "CompressionSpec", "effective_G_R"), "spec"),
    **dict.fromkeys(("clipped_normal_sigma", "closed_form_inner_level", "cn_bin_probs", "cn_density",
                     "expected_sr_variance", "optimal_inner_level", "variance_reduction"), "vm"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
