"""``CompressionSpec``: what compressed ops save for backward and how the quantization blocks are shaped.

Imports nothing heavy: the typed config of ``gnn_blockquant`` checks its knobs against the allowed values here at
start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["COMPRESS_BACKENDS", "DEFAULT_GRAD_CHUNK_VALUES", "QUANT_BITS", "QUANT_MODES", "CompressionSpec",
           "effective_G_R"]

QUANT_MODES = ("fp32", "exact", "block")
COMPRESS_BACKENDS = ("auto", "torch", "torch-compiled", "triton")  # see compress.backend.resolve_backend
QUANT_BITS = (2, 4, 8)  # widths the quantizer packs (sustainml_kernels.quant_ref packs 1 too)
# 2^20 fp32 values = 4 MiB per dequantized chunk in the weight-gradient backward: a fraction of the N x R buffer
# on arxiv-sized graphs (169k x 16 = 10.3 MiB), yet large enough that a chunk's matmul is not launch-bound.
DEFAULT_GRAD_CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class CompressionSpec:
    """quant: 'fp32' (nothing compressed), 'exact' (one block per row, EXACT) or 'block' (G_R rows per block).

    kept_frac: fraction R/D of columns kept by the random projection of linear-layer inputs.
    group_cap: largest block in values (the public i-Exact code's cap is 1024); None = no cap.
    fp32_tail: keep the ragged last block raw in fp32 (public code) instead of as a short block.
    store_rp_matrix: save the fp32 D x R projection (public code) instead of regenerating it from its seed.
    backend: 'auto' | 'torch' | 'triton', the implementation that packs and unpacks (same bytes either way).
    lean: save nothing that can be recomputed cheaply from a seed (dropout keep-masks are regenerated in backward);
        gradients are bit-identical to lean=False.
    grad_chunk_values: the linear weight-gradient backward dequantizes the saved input in row chunks of about this
        many values and accumulates grad_out_chunk^T @ chunk; None dequantizes the whole N x R input at once.
    """

    quant: str = "block"
    bits: int = 2
    kept_frac: float = 0.125
    G_R: int = 64
    vm: bool = False
    group_cap: int | None = None
    fp32_tail: bool = False
    store_rp_matrix: bool = False
    backend: str = "auto"
    lean: bool = False
    grad_chunk_values: int | None = DEFAULT_GRAD_CHUNK_VALUES

    def __post_init__(self) -> None:
        if self.quant not in QUANT_MODES:
            raise ValueError(f"quant={self.quant!r} is not allowed; allowed: {', '.join(QUANT_MODES)}")
        if self.bits not in QUANT_BITS:
            raise ValueError(f"bits={self.bits} is not allowed; allowed: {', '.join(map(str, QUANT_BITS))}")
        if not 0.0 < self.kept_frac <= 1.0:
            raise ValueError(f"kept_frac must lie in (0, 1], got {self.kept_frac}")
        if isinstance(self.G_R, bool) or not isinstance(self.G_R, int) or self.G_R < 1:
            raise ValueError(f"G_R must be an integer >= 1, got {self.G_R!r}")
        if self.vm and self.bits != 2:
            raise ValueError(f"vm=True needs bits=2 (variance minimisation is defined for INT2), got bits={self.bits}")
        if self.group_cap is not None and (isinstance(self.group_cap, bool) or not isinstance(self.group_cap, int)
                                           or self.group_cap < 1):
            raise ValueError(f"group_cap must be an integer >= 1 or None, got {self.group_cap!r}")
        if self.backend not in COMPRESS_BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not allowed; allowed: {', '.join(COMPRESS_BACKENDS)}")
        if self.grad_chunk_values is not None and (isinstance(self.grad_chunk_values, bool)
                                                   or not isinstance(self.grad_chunk_values, int)
                                                   or self.grad_chunk_values < 1):
            raise ValueError(f"grad_chunk_values must be an integer >= 1 or None, got {self.grad_chunk_values!r}")

    @property
    def enabled(self) -> bool:
        return self.quant != "fp32"

    def projected_dim(self, d: int) -> int:
        """R = ceil(d * kept_frac) columns kept by the random projection (R == d means no projection)."""
        # Rounding first keeps float noise from adding a column (100 * 0.1 = 10.000000000000002).
        return max(1, math.ceil(round(d * self.kept_frac, 9)))

    def rows_per_group(self, row_len: int) -> int:
        """Rows of length ``row_len`` per quantization block: 1 for exact; G_R for block, reduced to fit
        ``group_cap`` values (never below one row)."""
        if row_len < 1:
            raise ValueError(f"row_len must be >= 1, got {row_len}")
        if self.quant == "exact":
            return 1
        if self.quant == "block":
            if self.group_cap is None:
                return self.G_R
            return max(1, min(self.G_R, self.group_cap // row_len))
        raise ValueError("quant='fp32' stores no quantized tensors, so it has no blocks")

    def group_size(self, row_len: int) -> int:
        """Values per quantization block."""
        return self.rows_per_group(row_len) * row_len


def effective_G_R(spec: CompressionSpec, row_len: int) -> int:
    """Rows per block actually used for rows of ``row_len`` values (G_R after the group cap)."""
    return spec.rows_per_group(row_len)
