"""Bit-level contract of sustainml_kernels.quant_ref: hash, packing, bf16 rounding, projection and masks."""

from __future__ import annotations

import math
import random

import pytest
import torch

from sustainml_kernels.quant_ref import (
    dropout_mask_ref,
    hash_uint32,
    pack_codes,
    pack_mask_ref,
    quantize_pack_ref,
    rademacher_ref,
    round_bf16_down,
    round_bf16_up,
    uniform_from_hash,
    unpack_codes,
    unpack_dequantize_ref,
    unpack_mask_ref,
)

M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def _hash_python(seed: int, offset: int) -> int:
    """The documented recipe, in plain Python integers."""
    seed &= 2**64 - 1
    s_lo, s_hi = seed & M32, seed >> 32
    k1 = _fmix32(s_lo ^ _fmix32(s_hi ^ 0x9E3779B9))
    k2 = _fmix32(s_hi ^ 0x7F4A7C15)
    h = _fmix32((offset & M32) ^ k1)
    return _fmix32(((h ^ (offset >> 32)) + k2) & M32)


def test_hash_matches_the_documented_uint32_recipe() -> None:
    rng = random.Random(0)
    for _ in range(50):
        seed = rng.getrandbits(64)
        offsets = [rng.getrandbits(rng.choice([8, 31, 32, 40, 62])) for _ in range(20)]
        got = hash_uint32(seed, torch.tensor(offsets)).tolist()
        assert got == [_hash_python(seed, o) for o in offsets]


def test_hash_golden_values() -> None:
    # Frozen outputs: a kernel port must reproduce these exactly.
    assert hash_uint32(0, torch.tensor([0, 1, 2, 3])).tolist() == [303792969, 533076061, 565188513, 186728165]
    assert hash_uint32(0x0123456789ABCDEF, torch.tensor([0, 1, 2**32 + 7, 2**40 - 1])).tolist() == [
        1118617079, 1980494307, 1557663075, 1730477717]
    assert hash_uint32(2**64 - 1, torch.tensor([5])).tolist() == [1464682277]


def test_hash_keeps_shape_and_range_and_uniform_is_in_unit_interval() -> None:
    offsets = torch.arange(2 * 40_000).view(2, 40_000)  # more than one internal chunk
    h = hash_uint32(42, offsets)
    assert h.shape == offsets.shape and h.dtype == torch.int64
    assert int(h.min()) >= 0 and int(h.max()) < 2**32
    u = uniform_from_hash(h)
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u, (h >> 8).double().mul(2.0**-24).float())
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert not torch.equal(hash_uint32(43, offsets), h)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [0, 1, 3, 7, 13, 1001])
def test_pack_unpack_round_trip_is_bit_exact(bits: int, n: int) -> None:
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, n), codes)


def test_pack_layout_is_little_endian_within_bytes() -> None:
    assert pack_codes(torch.tensor([1, 2, 3, 0, 1], dtype=torch.uint8), 2).tolist() == [1 | 2 << 2 | 3 << 4, 1]
    assert pack_codes(torch.tensor([0xA, 0x5, 0xF], dtype=torch.uint8), 4).tolist() == [0x5A, 0x0F]
    assert pack_codes(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.uint8), 1).tolist() == [0x81, 0x01]


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="bits=3"):
        pack_codes(torch.zeros(4, dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match="< 2"):
        pack_codes(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 2, 5)


def test_mask_round_trip() -> None:
    mask = torch.rand(17, 9, generator=torch.Generator().manual_seed(0)) > 0.3
    packed = pack_mask_ref(mask)
    assert packed.numel() == math.ceil(17 * 9 / 8)
    assert torch.equal(unpack_mask_ref(packed, mask.shape), mask)


def _bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nearest = x.to(torch.bfloat16)
    down = torch.where(nearest.float() > x, torch.nextafter(nearest, torch.full_like(nearest, -math.inf)), nearest)
    up = torch.where(nearest.float() < x, torch.nextafter(nearest, torch.full_like(nearest, math.inf)), nearest)
    return down.float(), up.float()


def test_bf16_directed_rounding() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(5000, generator=g) * 10.0 ** torch.randint(-30, 30, (5000,), generator=g),
                   torch.tensor([0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 3e-39, -3e-39, 1e38, -1e38])])
    down, up = _bf16_neighbours(x)
    assert torch.equal(round_bf16_down(x), down)
    assert torch.equal(round_bf16_up(x), up)
    assert torch.equal(round_bf16_down(x).to(torch.bfloat16).float(), round_bf16_down(x))


def test_rademacher_is_seeded_signed_and_scaled() -> None:
    m = rademacher_ref(5, 64, 16, "cpu")
    assert m.shape == (64, 16) and m.dtype == torch.float32
    assert torch.equal(m.abs(), torch.full_like(m, 0.25))
    assert torch.equal(m, rademacher_ref(5, 64, 16))
    assert not torch.equal(m, rademacher_ref(6, 64, 16))
    h = hash_uint32(5, torch.arange(64 * 16)).view(64, 16)
    assert torch.equal(m < 0, (h >> 31) == 1)
    # E[M M^T] = I: the average over seeds approaches the identity (off-diagonal std 0.5 / sqrt(500)).
    mean = sum(m @ m.t() for m in (rademacher_ref(s, 8, 4) for s in range(500))) / 500
    assert torch.allclose(mean, torch.eye(8), atol=0.15)


def test_dropout_mask_is_the_uniform_threshold() -> None:
    for p in (0.0, 0.3, 0.5, 1.0):
        keep = dropout_mask_ref(11, (40, 50), p)
        u = uniform_from_hash(hash_uint32(11, torch.arange(2000))).view(40, 50)
        assert torch.equal(keep, u.double() >= p)
    keep = dropout_mask_ref(11, (100, 200), 0.3)
    assert abs(float(keep.float().mean()) - 0.7) < 0.02


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    x = torch.randn(100, 37, generator=torch.Generator().manual_seed(3))
    a = quantize_pack_ref(x, 2, 64, seed=9)
    b = quantize_pack_ref(x.clone(), 2, 64, seed=9)
    c = quantize_pack_ref(x, 2, 64, seed=10)
    assert torch.equal(a.payload, b.payload) and torch.equal(a.mins, b.mins) and torch.equal(a.ranges, b.ranges)
    assert not torch.equal(a.payload, c.payload)
    assert torch.equal(a.mins, c.mins) and torch.equal(a.ranges, c.ranges)  # metadata is deterministic


@pytest.mark.parametrize(("bits", "vm_a"), [(2, None), (2, 1.1), (4, None), (8, None), (1, None)])
@pytest.mark.parametrize("fp32_tail", [False, True])
def test_codes_survive_unpack_and_dequantize_within_a_step(bits: int, vm_a: float | None, fp32_tail: bool) -> None:
    x = torch.randn(70_003, generator=torch.Generator().manual_seed(bits)) * 3  # several chunks and a ragged end
    group = 1000
    packed = quantize_pack_ref(x, bits, group, 4, vm_a, fp32_tail)
    n_packed = x.numel() - (packed.tail.numel() if packed.tail is not None else 0)
    codes = unpack_codes(packed.payload, bits, n_packed)
    assert torch.equal(pack_codes(codes, bits), packed.payload)
    assert int(codes.max()) <= 2**bits - 1
    x_hat = unpack_dequantize_ref(*packed, x.shape, bits, group, vm_a)
    # Every value lands on one of the two levels around it: never further than the widest bin.
    mins, ranges = packed.mins.float(), packed.ranges.float()
    widest = 1.001 * (1.0 if vm_a is None else max(vm_a, 3 - 2 * vm_a) / 3 * (2**bits - 1))
    group_of = torch.arange(n_packed) // group
    assert bool(((x_hat[:n_packed] - x[:n_packed]).abs() <= ranges[group_of] * widest / (2**bits - 1)).all())
    assert bool((mins[group_of] <= x[:n_packed]).all())
    assert bool((x[:n_packed] <= mins[group_of] + ranges[group_of]).all())
    if fp32_tail:
        assert packed.tail is not None and torch.equal(x_hat[n_packed:], x[n_packed:])
