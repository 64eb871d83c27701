"""``QTensor``: a block-quantized tensor exactly as it sits in memory, and ``quantize`` / ``dequantize``.

The bit layout, random stream and arithmetic are those of ``sustainml_kernels.quant_ref`` (byte-identical to the
accelerated kernels); this module adds argument checking, the variance-minimised level choice, and a way to pass
the stored tensors through ``ctx.save_for_backward`` and rebuild the ``QTensor`` afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from sustainml_exp.compress.backend import resolve_backend
from sustainml_exp.compress.spec import QUANT_BITS
from sustainml_exp.compress.vm import optimal_inner_level
from sustainml_kernels.quant_ref import rademacher_ref

__all__ = [
    "DEQUANTIZE_LABEL",
    "QUANTIZE_LABEL",
    "QMeta",
    "QTensor",
    "dequantize",
    "dequantize_row_chunks",
    "dequantize_rows",
    "project_quantize",
    "quantize",
    "row_chunk_alignment",
]

# torch.profiler ranges around every (de)quantization, so a profile can attribute their time (bench_gnn --profile).
QUANTIZE_LABEL = "quantize/pack"
DEQUANTIZE_LABEL = "dequantize"


@dataclass(frozen=True)
class QMeta:
    """Everything of a ``QTensor`` that is not a tensor (safe to keep on an autograd ``ctx``)."""

    shape: tuple[int, ...]
    bits: int
    group_size: int
    vm_a: float | None
    seed: int
    has_tail: bool


@dataclass
class QTensor:
    payload: torch.Tensor  # uint8, packed codes of every non-tail value
    mins: torch.Tensor  # bfloat16, one per group
    ranges: torch.Tensor  # bfloat16, one per group
    tail: torch.Tensor | None  # fp32 raw ragged tail (fp32_tail layout only)
    shape: tuple[int, ...]
    bits: int
    group_size: int
    vm_a: float | None
    seed: int

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: payload + per-group bf16 min and range + fp32 tail."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def tensors(self) -> list[torch.Tensor]:
        """The stored tensors in a fixed order (payload, mins, ranges[, tail]); see ``from_tensors``."""
        stored = [self.payload, self.mins, self.ranges]
        return stored if self.tail is None else [*stored, self.tail]

    def meta(self) -> QMeta:
        return QMeta(self.shape, self.bits, self.group_size, self.vm_a, self.seed, self.tail is not None)

    @classmethod
    def from_tensors(cls, tensors: Sequence[torch.Tensor], meta: QMeta) -> QTensor:
        """Rebuild from ``tensors()`` output (e.g. ``ctx.saved_tensors`` slices) and ``meta()``."""
        expected = 4 if meta.has_tail else 3
        if len(tensors) != expected:
            raise ValueError(f"a QTensor with has_tail={meta.has_tail} has {expected} tensors, got {len(tensors)}")
        tail = tensors[3] if meta.has_tail else None
        return cls(tensors[0], tensors[1], tensors[2], tail, meta.shape, meta.bits, meta.group_size, meta.vm_a,
                   meta.seed)


def _check_bits_group(bits: int, group_size: int) -> None:
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits} is not allowed for quantize; allowed: {', '.join(map(str, QUANT_BITS))}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")


def _check_quantize_args(x: torch.Tensor, bits: int, group_size: int, vm: bool) -> float | None:
    """The VM inner level (None without VM) after checking the arguments of a quantize call."""
    _check_bits_group(bits, group_size)
    if vm and bits != 2:
        raise ValueError(f"vm=True needs bits=2 (variance minimisation is defined for INT2), got bits={bits}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"quantize needs a floating-point tensor, got {x.dtype}")
    return optimal_inner_level(group_size) if vm else None


def quantize(x: torch.Tensor, bits: int, group_size: int, *, vm: bool = False, seed: int,
             fp32_tail: bool = False, backend: str = "auto") -> QTensor:
    """Stochastically round ``x`` to ``bits``-bit codes in blocks of ``group_size`` flat values (unbiased).

    ``vm=True`` (INT2 only) uses the variance-minimised levels {0, a, 3-a, 3} with a = optimal_inner_level
    (group_size). ``fp32_tail`` keeps a ragged last block raw in fp32 instead of as a short block. ``backend``
    (auto | torch | triton, see ``resolve_backend``) picks the implementation; the bytes are the same.
    """
    vm_a = _check_quantize_args(x, bits, group_size, vm)
    with torch.no_grad(), record_function(QUANTIZE_LABEL):
        packed = resolve_backend(backend, x.device).quantize_pack(x, bits, group_size, seed, vm_a, fp32_tail)
    return QTensor(packed.payload, packed.mins, packed.ranges, packed.tail, tuple(x.shape), bits, group_size, vm_a,
                   seed)


def project_quantize(x2d: torch.Tensor, kept_dim: int, proj_seed: int, bits: int, group_size: int, *,
                     vm: bool = False, seed: int, fp32_tail: bool = False, backend: str = "auto") -> QTensor:
    """``quantize(x2d @ rademacher_ref(proj_seed, D, kept_dim))`` for an N x D ``x2d``, as one fused pass where
    the backend has one (the N x R projection is then never written out), else as matmul + quantize."""
    if x2d.dim() != 2:
        raise ValueError(f"project_quantize expects an N x D input, got shape {tuple(x2d.shape)}")
    vm_a = _check_quantize_args(x2d, bits, group_size, vm)
    chosen = resolve_backend(backend, x2d.device)
    shape = (x2d.shape[0], kept_dim)
    with torch.no_grad(), record_function(QUANTIZE_LABEL):
        if chosen.project_quantize_pack is None:
            projected = x2d.to(torch.float32) @ rademacher_ref(proj_seed, x2d.shape[1], kept_dim, device=x2d.device)
            packed = chosen.quantize_pack(projected, bits, group_size, seed, vm_a, fp32_tail)
        else:
            packed = chosen.project_quantize_pack(x2d, kept_dim, proj_seed, bits, group_size, seed, vm_a, fp32_tail)
    return QTensor(packed.payload, packed.mins, packed.ranges, packed.tail, shape, bits, group_size, vm_a, seed)


def dequantize(q: QTensor, *, backend: str = "auto") -> torch.Tensor:
    """fp32 tensor of ``q.shape``: code level / B * range + min per value, the fp32 tail copied back."""
    with torch.no_grad(), record_function(DEQUANTIZE_LABEL):
        return resolve_backend(backend, q.payload.device).unpack_dequantize(
            q.payload, q.mins, q.ranges, q.tail, q.shape, q.bits, q.group_size, q.vm_a)


# --------------------------------------------------------------------------------------------- row chunks


def row_chunk_alignment(q: QTensor) -> int:
    """Smallest number of rows after which a 2-D ``q`` can be cut: the cut must fall on a group boundary (each
    piece carries whole groups of metadata) and on a byte boundary of the payload (the codes of 2- and 4-bit
    values share bytes)."""
    if len(q.shape) != 2:
        raise ValueError(f"row chunks need a 2-D QTensor, got shape {q.shape}")
    row_len = max(1, q.shape[1])
    values_per_byte = 8 // math.gcd(q.bits, 8)
    value_unit = math.lcm(q.group_size, values_per_byte)
    return math.lcm(value_unit, row_len) // row_len


def dequantize_rows(q: QTensor, row_start: int, row_stop: int, *, backend: str = "auto") -> torch.Tensor:
    """fp32 rows [row_start, row_stop) of a 2-D ``q``, equal to ``dequantize(q)[row_start:row_stop]`` but without
    dequantizing the other rows. ``row_start`` must be a multiple of ``row_chunk_alignment(q)``."""
    align = row_chunk_alignment(q)
    n_rows, row_len = q.shape
    if row_start % align or not 0 <= row_start <= row_stop <= n_rows:
        raise ValueError(f"rows [{row_start}, {row_stop}) cannot be cut from {n_rows} rows; row_start must be a "
                         f"multiple of {align} (group and byte boundary)")
    start, stop = row_start * row_len, row_stop * row_len
    n_packed = q.numel - (0 if q.tail is None else q.tail.numel())
    shape = (row_stop - row_start, row_len)
    # Raw fp32 tail values after the packed groups are copied, not dequantized.
    tail = None if q.tail is None or stop <= n_packed else q.tail[max(start, n_packed) - n_packed: stop - n_packed]
    if start >= n_packed:
        return (tail if tail is not None else torch.empty(0, device=q.payload.device)).to(torch.float32).view(shape)
    packed_stop = min(stop, n_packed)
    first_group, end_group = start // q.group_size, -(-packed_stop // q.group_size)
    # start is byte-aligned; the last byte may also hold codes of the next rows, which unpacking ignores.
    payload = q.payload[start * q.bits // 8: -(-packed_stop * q.bits // 8)]
    with torch.no_grad(), record_function(DEQUANTIZE_LABEL):
        return resolve_backend(backend, q.payload.device).unpack_dequantize(
            payload, q.mins[first_group:end_group], q.ranges[first_group:end_group], tail, shape, q.bits,
            q.group_size, q.vm_a)


def dequantize_row_chunks(q: QTensor, chunk_values: int | None, *,
                          backend: str = "auto") -> Iterator[tuple[int, int, torch.Tensor]]:
    """(row_start, row_stop, fp32 rows) covering a 2-D ``q`` in order, each piece about ``chunk_values`` values
    (rounded down to whole ``row_chunk_alignment`` units, at least one unit); None yields all rows at once."""
    align = row_chunk_alignment(q)
    n_rows, row_len = q.shape
    if chunk_values is None:
        yield 0, n_rows, dequantize(q, backend=backend)
        return
    if chunk_values < 1:
        raise ValueError(f"chunk_values must be >= 1 or None, got {chunk_values}")
    rows_per_chunk = max(1, chunk_values // (align * max(1, row_len))) * align
    for row_start in range(0, n_rows, rows_per_chunk):
        row_stop = min(row_start + rows_per_chunk, n_rows)
        yield row_start, row_stop, dequantize_rows(q, row_start, row_stop, backend=backend)
