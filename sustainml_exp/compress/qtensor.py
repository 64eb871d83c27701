"""``QTensor``: a block-quantized tensor exactly as it sits in memory, and ``quantize`` / ``dequantize``.

The bit layout, random stream and arithmetic are those of ``sustainml_kernels.quant_ref`` (byte-identical to the
accelerated kernels); this module adds argument checking, the variance-minimised level choice, and a way to pass
the stored tensors through ``ctx.save_for_backward`` and rebuild the ``QTensor`` afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sustainml_exp.compress.vm import optimal_inner_level
from sustainml_kernels.quant_ref import quantize_pack_ref, unpack_dequantize_ref

__all__ = ["QUANTIZE_BITS", "QMeta", "QTensor", "dequantize", "quantize"]

QUANTIZE_BITS = (2, 4, 8)


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
    if bits not in QUANTIZE_BITS:
        raise ValueError(f"bits={bits} is not allowed for quantize; allowed: {', '.join(map(str, QUANTIZE_BITS))}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")


def quantize(x: torch.Tensor, bits: int, group_size: int, *, vm: bool = False, seed: int,
             fp32_tail: bool = False) -> QTensor:
    """Stochastically round ``x`` to ``bits``-bit codes in blocks of ``group_size`` flat values (unbiased).

    ``vm=True`` (INT2 only) uses the variance-minimised levels {0, a, 3-a, 3} with a = optimal_inner_level
    (group_size). ``fp32_tail`` keeps a ragged last block raw in fp32 instead of as a short block.
    """
    _check_bits_group(bits, group_size)
    if vm and bits != 2:
        raise ValueError(f"vm=True needs bits=2 (variance minimisation is defined for INT2), got bits={bits}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"quantize needs a floating-point tensor, got {x.dtype}")
    vm_a = optimal_inner_level(group_size) if vm else None
    with torch.no_grad():
        packed = quantize_pack_ref(x, bits, group_size, seed, vm_a, fp32_tail)
    return QTensor(packed.payload, packed.mins, packed.ranges, packed.tail, tuple(x.shape), bits, group_size, vm_a,
                   seed)


def dequantize(q: QTensor) -> torch.Tensor:
    """fp32 tensor of ``q.shape``: code level / B * range + min per value, the fp32 tail copied back."""
    with torch.no_grad():
        return unpack_dequantize_ref(q.payload, q.mins, q.ranges, q.tail, q.shape, q.bits, q.group_size, q.vm_a)
