"""Bit-level comparison of packed activations, shared by the kernel tests."""

from __future__ import annotations

import torch


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so that -0.0 != 0.0 and NaN == NaN in comparisons."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_same_packed(got, ref) -> None:
    """Payload bytes, bf16 minima/ranges and the raw fp32 tail all identical, bit for bit."""
    assert torch.equal(got.payload, ref.payload)
    assert torch.equal(bits_of(got.mins), bits_of(ref.mins))
    assert torch.equal(bits_of(got.ranges), bits_of(ref.ranges))
    assert (got.tail is None) == (ref.tail is None)
    if ref.tail is not None:
        assert torch.equal(bits_of(got.tail), bits_of(ref.tail))
