"""Bit-level contract of sustainml_kernels.quant_ref: hash, packing, bf16 rounding, projection and masks."""

from __future__ import annotations

import math
import random

import pytest
import torch

from sustainml_kernels.quant_ref import (
    RANGE_FLOOR,
    dequant_level_table,
    dropout_mask_ref,
    group_reciprocal,
    hash_keys,
    hash_uint32,
    pack_codes,
    pack_mask_ref,
    quantize_pack_ref,
    rademacher_ref,
    round_bf16_down,
    round_bf16_up,
    round_to_f32,
    rounding_noise,
    uniform_from_hash,
    unpack_codes,
    unpack_dequantize_ref,
    unpack_mask_ref,
)

M32 = 0xFFFFFFFF
SEED = 0x0123456789ABCDEF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def _keys_python(seed: int) -> tuple[int, int]:
    seed &= 2**64 - 1
    s_lo, s_hi = seed & M32, seed >> 32
    k1 = _fmix32(s_lo ^ _fmix32(s_hi ^ 0x9E3779B9))
    return k1, _fmix32(s_hi ^ _fmix32(k1 ^ 0x7F4A7C15))


def _hash_python(seed: int, counter: int) -> int:
    """The documented recipe, in plain Python integers."""
    k1, k2 = _keys_python(seed)
    x = (counter & M32) ^ k1
    x ^= x >> 17
    x = (x * 0xED5AD4BB) & M32
    x = (x + (k2 ^ (counter >> 32))) & M32
    x ^= x >> 11
    x = (x * 0xAC4C1B51) & M32
    x ^= x >> 15
    x = (x * 0x31848BAB) & M32
    return x ^ (x >> 14)


def test_hash_matches_the_documented_uint32_recipe() -> None:
    rng = random.Random(0)
    for _ in range(50):
        seed = rng.getrandbits(64)
        counters = [rng.getrandbits(rng.choice([8, 31, 32, 40, 62])) for _ in range(20)]
        got = hash_uint32(seed, torch.tensor(counters)).tolist()
        assert got == [_hash_python(seed, c) for c in counters]
        assert hash_keys(seed) == _keys_python(seed)


def test_hash_golden_values() -> None:
    # Frozen outputs: a kernel port must reproduce these exactly.
    assert hash_uint32(0, torch.tensor([0, 1, 2, 3])).tolist() == [2498909851, 3104941893, 2370062695, 353751767]
    assert hash_uint32(0x0123456789ABCDEF, torch.tensor([0, 1, 2**32 + 7, 2**40 - 1])).tolist() == [
        3559201844, 2372741050, 3768474337, 117576017]
    assert hash_uint32(2**64 - 1, torch.tensor([5])).tolist() == [559003751]


def test_both_keys_depend_on_every_bit_of_the_seed() -> None:
    """Each key changes whichever seed bit flips (no key is a function of one seed word), and distinct seeds give
    distinct key pairs; streams of seeds that differ in one word are unrelated (about half the bits agree)."""
    rng = random.Random(1)
    seeds = [rng.getrandbits(64) for _ in range(20)]
    for seed in seeds:
        k1, k2 = hash_keys(seed)
        for bit in range(64):
            f1, f2 = hash_keys(seed ^ (1 << bit))
            assert f1 != k1 and f2 != k2, (hex(seed), bit)
    assert len({hash_keys(s) for s in range(4096)}) == 4096
    counters = torch.arange(1 << 14)
    base = hash_uint32(seeds[0], counters)
    for other in (seeds[0] ^ 1, seeds[0] ^ (1 << 40), seeds[0] ^ (1 << 63)):
        agree = (~(base ^ hash_uint32(other, counters)) & M32)
        agree_fraction = sum(bin(v).count("1") for v in agree.tolist()) / (32 * counters.numel())
        assert abs(agree_fraction - 0.5) < 0.01, (hex(other), agree_fraction)


def test_hash_keeps_shape_and_range_and_uniform_is_in_unit_interval() -> None:
    counters = torch.arange(2 * 40_000).view(2, 40_000)  # more than one internal chunk
    h = hash_uint32(42, counters)
    assert h.shape == counters.shape and h.dtype == torch.int64
    assert int(h.min()) >= 0 and int(h.max()) < 2**32
    u = uniform_from_hash(h)
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u, (h >> 8).double().mul(2.0**-24).float())
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert not torch.equal(hash_uint32(43, counters), h)


def test_rounding_noise_is_one_hash_per_pair_of_elements() -> None:
    h = hash_uint32(SEED, torch.arange(40))
    want = torch.stack([h & 0xFFFF, h >> 16], dim=1).reshape(-1)
    assert torch.equal(rounding_noise(SEED, 0, 80), want)
    for start, n in ((1, 5), (7, 30), (33, 0), (2, 78)):  # odd starts begin with the high half of a pair
        assert torch.equal(rounding_noise(SEED, start, n), want[start:start + n])
    big = 2**40 + 3
    assert rounding_noise(SEED, big, 1).item() == hash_uint32(SEED, torch.tensor([big >> 1])).item() >> 16
    u = rounding_noise(SEED, 0, 1 << 17).double() / 2**16  # uniform on [0, 1): mean 1/2, variance 1/12
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    with pytest.raises(ValueError, match="start >= 0"):
        rounding_noise(SEED, -1, 3)


def _codes_python(x: list[float], bits: int, noise: list[int]) -> list[int]:
    """One group's codes by the documented recipe, in fp32 via struct round trips (no torch)."""
    f32 = round_to_f32
    top = (1 << bits) - 1
    mn = float(round_bf16_down(torch.tensor([min(x)]))[0])
    rng = float(round_bf16_up(torch.tensor([f32(max(x) - mn)]))[0])
    rng = max(rng, RANGE_FLOOR) if rng > 0 else 0.0
    inv = f32(top * 65536 / rng) if rng > 0 else 0.0
    return [min((int(f32(f32(v - mn) * inv)) + n) >> 16, top) for v, n in zip(x, noise)]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_codes_follow_the_documented_fixed_point_recipe(bits: int) -> None:
    x = (torch.randn(3, 40, generator=torch.Generator().manual_seed(bits)) * 5).reshape(-1)
    packed = quantize_pack_ref(x, bits, 40, SEED)
    codes = unpack_codes(packed.payload, bits, x.numel()).tolist()
    noise = rounding_noise(SEED, 0, x.numel()).tolist()
    for g in range(3):
        part = slice(40 * g, 40 * g + 40)
        assert codes[part] == _codes_python(x[part].tolist(), bits, noise[part])


def test_stochastic_rounding_probability_is_the_fraction_to_within_the_noise_resolution() -> None:
    """P(q = floor(h) + 1) = trunc(s) mod 2^16 / 2^16 over the 2^16 noise values: E[q] = trunc(s) / 2^16, at most
    one noise step (2^-16 of a level) below h."""
    top = 3
    for frac in (0.0, 0.25, 1 / 3, 0.5, 0.999, 0.9999999):
        s = math.floor((1 + frac) * 65536)  # h = 1 + frac levels
        codes = [min((s + n) >> 16, top) for n in range(1 << 16)]
        mean = sum(codes) / (1 << 16)
        assert 0.0 <= (1 + frac) - mean < 2.0**-16


def test_tiny_ranges_are_raised_to_the_floor_and_zero_ranges_stay_zero() -> None:
    x = torch.tensor([1e-35, 2e-35, 3e-35, 5e-35, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0 + 1e-7, 1.0, 1.0])
    packed = quantize_pack_ref(x, 2, 4, SEED)
    ranges = packed.ranges.float()
    assert ranges[0] == RANGE_FLOOR and ranges[1] == 0.0 and ranges[2] > RANGE_FLOOR
    inv = group_reciprocal(ranges, 2)
    assert bool(torch.isfinite(inv).all()) and inv[1] == 0.0
    out = unpack_dequantize_ref(*packed, x.shape, 2, 4)
    assert torch.equal(out[4:8], x[4:8])  # a constant group decodes exactly
    assert bool(((out[:4] - x[:4]).abs() <= RANGE_FLOOR).all())


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_uniform_level_table_is_one_fp32_multiply_and_hits_both_ends_exactly(bits: int) -> None:
    top = (1 << bits) - 1
    table = dequant_level_table(bits, None)
    step = torch.tensor(1.0 / top, dtype=torch.float32)
    assert torch.equal(torch.tensor(table, dtype=torch.float32), torch.arange(top + 1, dtype=torch.float32) * step)
    assert table[0] == 0.0 and table[-1] == 1.0


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
    h = hash_uint32(5, torch.arange(64)).view(64, 1)  # one hash word per row of <= 32 entries
    assert torch.equal(m < 0, ((h >> torch.arange(16)) & 1) == 1)
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


def test_signed_zero_minima_and_ranges_are_stored_as_positive_zero() -> None:
    """Which zero a min / max reduction returns is unspecified, so no -0.0 may reach the metadata."""
    for order in ([-0.0, 0.0, 1.0, 2.0], [0.0, -0.0, 1.0, 2.0], [-0.0, -0.0, -0.0, 0.0], [0.0, -0.0, 0.0, -0.0]):
        packed = quantize_pack_ref(torch.tensor(order * 3), 2, 4, SEED)
        assert packed.mins.view(torch.int16).tolist() == [0, 0, 0], order
        assert not any(torch.signbit(packed.ranges.float()).tolist()), order
