"""Pure-torch reference of the packed INT-b activation layout, its random stream and its arithmetic.

Everything here is specified down to the bit so that a GPU kernel can reproduce it byte for byte (the kernels in
``quant_triton.py`` and ``rp_triton.py`` do); this docstring is the specification a kernel follows.

Conventions: integer steps are uint32 arithmetic modulo 2^32 (here: int64 torch arithmetic masked to 32 bits,
exact on every backend); ``fp32(...)`` is one IEEE-754 single-precision operation rounded to nearest even; no
step may be contracted into an FMA, and every division is correctly rounded. Subnormals are kept (no flush).

Random stream (``hash_uint32``): a keyed counter-based hash of (seed, 64-bit counter)::

    fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16
    keys (host side, once per seed; a bijection of the 64-bit seed, both keys depend on all of its bits):
        s_lo, s_hi = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
        k1 = fmix32(s_lo ^ fmix32(s_hi ^ 0x9E3779B9))
        k2 = fmix32(s_hi ^ fmix32(k1 ^ 0x7F4A7C15))
    hash(c), c_lo = c & 0xFFFFFFFF, c_hi = c >> 32 (Wellons' triple32 with the keys mixed in):
        x = c_lo ^ k1
        x ^= x >> 17;  x *= 0xED5AD4BB
        x += k2 ^ c_hi
        x ^= x >> 11;  x *= 0xAC4C1B51
        x ^= x >> 15;  x *= 0x31848BAB
        x ^= x >> 14

k2 enters after the first multiply, so the streams of two seeds are not relabelings (XOR-shifted copies) of
each other. Uses of the stream:

* rounding noise (``rounding_noise``): element i of a quantized tensor gets the 16-bit value
  ``(hash(i >> 1) >> (16 * (i & 1))) & 0xFFFF``: one hash serves two neighbouring elements;
* projection signs (``rademacher_ref``): entry (d, j) of a D x r matrix is negative iff bit (j & 31) of
  ``hash(d * ceil(r / 32) + (j >> 5))`` is set: one hash serves 32 entries of a row;
* dropout (``dropout_mask_ref``): element i is kept iff ``(hash(i) >> 8) >= ceil(p * 2^24)``.

Quantized layout (``quantize_pack_ref``): the input is flattened row-major, converted to fp32 (exactly for
fp16/bf16) and cut into groups of ``group_size`` consecutive values. Each group stores its minimum and range as
bfloat16 and every value as a ``bits``-bit code, packed little-endian within bytes (``pack_codes``). A ragged last
group is either quantized as a short group with its own metadata or, with ``fp32_tail``, kept raw in fp32. The
arithmetic (B = 2^bits - 1)::

    per group:   mn  = round_bf16_down(min x)                                   (-0.0 -> +0.0)
                 rng = round_bf16_up(fp32(max x - mn));  rng = max(rng, 2^-100) if rng > 0 else +0.0
                 inv = fp32(B * 2^16 / rng) if rng > 0 else 0               (one correctly rounded division)
    per element: s   = fp32(fp32(x - mn) * inv)                               (0 <= s, fixed point: 2^16 per level)
                 VM only (bits = 2, levels 0 < a < b < 3, see vm_constants / vm_pieces):
                     (off, r, base) = (0, ra, 0) if s < A, (A, rm, 2^16) if s < Bv, else (Bv, rt, 2^17)
                     s = fp32(fp32(s - off) * r)                                (A = a * 2^16, Bv = b * 2^16)
                 q   = min((trunc(s) + base + noise) >> 16, B)                 (int32; base = 0 without VM)

``(trunc(s) + noise) >> 16`` is stochastic rounding of s / 2^16 with 16-bit noise: E[q] = trunc(s) / 2^16, so the
codes are unbiased to within 2^-16 of a level (the noise resolution). The range floor keeps ``inv`` finite (a
range below 2^-100 would make B * 2^16 / rng overflow); values that small are zero for any training purpose.
Decoding: ``x_hat = fp32(fp32(level(q) * rng) + mn)`` with ``level(q) = fp32(q * fp32(1 / B))`` uniformly, or
``fp32(level_value / 3)`` of the VM levels {0, a, b, 3} (``dequant_level_table``).
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import NamedTuple

import torch

__all__ = [
    "HASH_FINAL_SHIFT",
    "HASH_ROUNDS",
    "NOISE_BITS",
    "PACK_BITS",
    "QUANT_BITS",
    "RANGE_FLOOR",
    "PackedRef",
    "dequant_level_table",
    "dropout_mask_ref",
    "group_ranges",
    "group_reciprocal",
    "hash_keys",
    "hash_uint32",
    "pack_codes",
    "pack_mask_ref",
    "project_quantize_pack_ref",
    "project_rademacher_ref",
    "quantize_pack_ref",
    "rademacher_ref",
    "round_bf16_down",
    "round_bf16_up",
    "rounding_noise",
    "sign_words_per_row",
    "substream_seed",
    "uniform_from_hash",
    "unpack_codes",
    "unpack_dequantize_ref",
    "unpack_mask_ref",
    "vm_constants",
    "vm_pieces",
]

PACK_BITS = (1, 2, 4, 8)
QUANT_BITS = (1, 2, 4, 8)  # quant_ref itself accepts every packable width; the public API narrows this.
NOISE_BITS = 16  # rounding noise per element: one 32-bit hash serves two elements
RANGE_FLOOR = 2.0**-100  # smallest non-zero group range: B * 2^16 / RANGE_FLOOR < 2^128 stays finite in fp32

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_FMIX_C1 = 0x85EBCA6B
_FMIX_C2 = 0xC2B2AE35
_KEY1_SALT = 0x9E3779B9
_KEY2_SALT = 0x7F4A7C15
# Wellons' triple32 (github.com/skeeto/hash-prospector): shifts and multipliers of its three rounds.
HASH_ROUNDS = ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB))
HASH_FINAL_SHIFT = 14
_SUBSTREAM_GOLDEN = 0x9E3779B97F4A7C15
_UNIFORM_SCALE = 2.0**-24
_FIXED_ONE = 1 << NOISE_BITS  # one quantization level in the fixed-point s
SIGNS_PER_WORD = 32


# --------------------------------------------------------------------------------------------- hashing


def _fmix32_int(h: int) -> int:
    h &= _MASK32
    h ^= h >> 16
    h = (h * _FMIX_C1) & _MASK32
    h ^= h >> 13
    h = (h * _FMIX_C2) & _MASK32
    h ^= h >> 16
    return h


def _chunk_len(device: torch.device) -> int:
    # Cache-sized pieces make the ~20 elementwise passes on CPU several times faster; GPUs want big launches.
    return 1 << 16 if device.type == "cpu" else 1 << 24


def hash_keys(seed: int) -> tuple[int, int]:
    """The two 32-bit keys of a 64-bit seed (see the module docstring). (k1, k2) is a bijection of the seed, so
    distinct seeds never share a stream, and each key depends on every bit of the seed. A kernel takes them as
    scalar arguments instead of recomputing them."""
    seed &= _MASK64
    s_lo, s_hi = seed & _MASK32, seed >> 32
    k1 = _fmix32_int(s_lo ^ _fmix32_int(s_hi ^ _KEY1_SALT))
    k2 = _fmix32_int(s_hi ^ _fmix32_int(k1 ^ _KEY2_SALT))
    return k1, k2


def hash_uint32(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """Keyed counter-based hash of (seed, counter) (the recipe is in the module docstring); returns int64 values in
    [0, 2^32) of ``counters``' shape and device. ``counters`` must be a non-negative integer tensor."""
    if counters.dtype.is_floating_point or counters.dtype == torch.bool:
        raise ValueError(f"counters must be an integer tensor, got {counters.dtype}")
    flat = counters.reshape(-1).to(torch.int64)
    out = torch.empty_like(flat)
    step = _chunk_len(flat.device)
    keys = hash_keys(seed)
    for start in range(0, flat.numel(), step):
        out[start:start + step] = _hash_chunk(keys, flat[start:start + step])
    return out.view(counters.shape)


def _hash_chunk(keys: tuple[int, int], counters: torch.Tensor) -> torch.Tensor:
    """hash_uint32 of int64 counters for precomputed keys. int64 products of two uint32 values can exceed 2^63;
    torch's int64 multiply wraps modulo 2^64 (two's complement, CPU and CUDA), so the low 32 bits kept by the
    mask are exactly those of the uint32 product (the tests check the whole hash against Python integers)."""
    k1, k2 = keys
    x = torch.bitwise_and(counters, _MASK32).bitwise_xor_(k1)
    (first_shift, first_mul), *rest = HASH_ROUNDS
    x.bitwise_xor_(x >> first_shift).mul_(first_mul).bitwise_and_(_MASK32)
    x.add_((counters >> 32).bitwise_xor_(k2)).bitwise_and_(_MASK32)
    for shift, multiplier in rest:
        x.bitwise_xor_(x >> shift).mul_(multiplier).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> HASH_FINAL_SHIFT)


def uniform_from_hash(h: torch.Tensor) -> torch.Tensor:
    """fp32 uniform in [0, 1) from the top 24 bits of a hash: (h >> 8) * 2^-24 (exact in fp32)."""
    return (h >> 8).to(torch.float32).mul_(_UNIFORM_SCALE)


def _noise_chunk(keys: tuple[int, int], start: int, stop: int, device: torch.device) -> torch.Tensor:
    """int64 rounding noise of elements [start, stop): one hash per pair (2m, 2m + 1), low half to the even one."""
    pairs = torch.arange(start >> 1, (stop + 1) >> 1, dtype=torch.int64, device=device)
    h = _hash_chunk(keys, pairs)
    halves = torch.stack([h & 0xFFFF, h >> 16], dim=1).view(-1)
    return halves[start & 1: (start & 1) + stop - start]


def rounding_noise(seed: int, start: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The 16-bit rounding noise of elements [start, start + n) as int64: element i gets
    ``(hash_uint32(seed, i >> 1) >> (16 * (i & 1))) & 0xFFFF``."""
    if start < 0 or n < 0:
        raise ValueError(f"rounding_noise needs start >= 0 and n >= 0, got start={start}, n={n}")
    return _noise_chunk(hash_keys(seed), start, start + n, torch.device(device or "cpu"))


def substream_seed(seed: int, stream: int) -> int:
    """A seed for an independent stream derived from ``seed``: seed ^ (stream * 0x9E3779B97F4A7C15) mod 2^64.

    Used where one op needs two unrelated random streams (e.g. projection signs and rounding noise)."""
    return (seed ^ (stream * _SUBSTREAM_GOLDEN)) & _MASK64


# --------------------------------------------------------------------------------------------- packing


def _check_pack_bits(bits: int) -> None:
    if bits not in PACK_BITS:
        raise ValueError(f"bits={bits} cannot be packed; allowed: {', '.join(map(str, PACK_BITS))}")


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D uint8 tensor of ``bits``-bit codes: code i sits at bit (i*bits) % 8 of byte (i*bits) // 8.

    Returns a fresh uint8 tensor of ceil(n*bits/8) bytes; unused high bits of the last byte are zero."""
    _check_pack_bits(bits)
    if codes.dim() != 1 or codes.dtype != torch.uint8:
        raise ValueError(f"codes must be a 1-D uint8 tensor, got {codes.dim()}-D {codes.dtype}")
    if codes.numel() and int(codes.max()) >> bits:
        raise ValueError(f"codes must be < 2^{bits}, got max {int(codes.max())}")
    return _pack(codes, bits)


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return codes.clone()
    n = codes.numel()
    per_byte = 8 // bits
    n_bytes = -(-n // per_byte)
    padded = torch.zeros(n_bytes * per_byte, dtype=torch.int32, device=codes.device)
    padded[:n] = codes
    shifts = torch.arange(0, 8, bits, dtype=torch.int32, device=codes.device)
    return (padded.view(n_bytes, per_byte) << shifts).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: the first ``n`` codes of ``packed`` as a 1-D uint8 tensor."""
    _check_pack_bits(bits)
    if packed.dim() != 1 or packed.dtype != torch.uint8:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dim()}-D {packed.dtype}")
    if -(-n * bits // 8) != packed.numel():
        raise ValueError(f"{n} codes of {bits} bits need {-(-n * bits // 8)} bytes, got {packed.numel()}")
    if bits == 8:
        return packed.clone()
    shifts = torch.arange(0, 8, bits, dtype=torch.int32, device=packed.device)
    codes = (packed.to(torch.int32).unsqueeze(1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:n].to(torch.uint8)


def pack_mask_ref(mask: torch.Tensor) -> torch.Tensor:
    """1 bit per element (row-major), via ``pack_codes(bits=1)``."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    return pack_codes(mask.reshape(-1).to(torch.uint8), 1)


def unpack_mask_ref(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    return unpack_codes(packed, 1, math.prod(shape)).view(tuple(shape)).to(torch.bool)


# --------------------------------------------------------------------------------------------- bf16 rounding


def _f32_bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32).to(torch.int64).bitwise_and_(_MASK32)


def _bits_f32(bits: torch.Tensor) -> torch.Tensor:
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    return signed.to(torch.int32).view(torch.float32)


def round_to_bf16_grid(x: torch.Tensor, *, up: bool) -> torch.Tensor:
    bits = _f32_bits(x.to(torch.float32))
    negative = (bits >> 31) == 1
    toward_zero = bits & 0xFFFF0000
    away_from_zero = (bits + 0xFFFF) & 0xFFFF0000  # equals toward_zero when the low 16 bits are already 0
    rounded = torch.where(negative == up, toward_zero, away_from_zero)
    return _bits_f32(rounded)


def round_bf16_down(x: torch.Tensor) -> torch.Tensor:
    """Largest bf16 value <= x, returned as fp32 (exactly representable in bf16).

    On the fp32 bit pattern b: x >= 0 -> b & 0xFFFF0000; x < 0 -> (b + 0xFFFF) & 0xFFFF0000."""
    return round_to_bf16_grid(x, up=False)


def round_bf16_up(x: torch.Tensor) -> torch.Tensor:
    """Smallest bf16 value >= x, returned as fp32: x >= 0 -> (b + 0xFFFF) & 0xFFFF0000; x < 0 -> b & 0xFFFF0000."""
    return round_to_bf16_grid(x, up=True)


# --------------------------------------------------------------------------------------------- quantization


class PackedRef(NamedTuple):
    payload: torch.Tensor  # uint8, ceil(n_packed * bits / 8)
    mins: torch.Tensor  # bfloat16, one per group
    ranges: torch.Tensor  # bfloat16, one per group
    tail: torch.Tensor | None  # fp32 raw ragged tail (fp32_tail only, None when there is no ragged part)


def vm_constants(vm_a: float) -> tuple[float, float]:
    """(a, b): the fp32 inner levels {0, a, b, 3} of variance-minimised INT2; a = fp32(vm_a), b = fp32(3 - a)."""
    if not 0.0 < vm_a < 1.5:
        raise ValueError(f"vm_a must lie in (0, 1.5), got {vm_a}")
    a = round_to_f32(vm_a)
    return a, round_to_f32(3.0 - a)


class VmPieces(NamedTuple):
    """The fp32 constants of the VM map in fixed point (see the module docstring): piece thresholds A = a * 2^16
    and Bv = b * 2^16 (exact), and the slopes ra = fp32(1 / a), rm = fp32(1 / (b - a)), rt = fp32(1 / (3 - b))
    (each reciprocal taken in float64 of the exact fp32 differences, then rounded once to fp32)."""

    low_end: float
    mid_end: float
    low_slope: float
    mid_slope: float
    top_slope: float


@lru_cache(maxsize=64)
def vm_pieces(vm_a: float) -> VmPieces:
    a, b = vm_constants(vm_a)
    return VmPieces(a * _FIXED_ONE, b * _FIXED_ONE, round_to_f32(1.0 / a), round_to_f32(1.0 / (b - a)),
                    round_to_f32(1.0 / (3.0 - b)))


@lru_cache(maxsize=64)
def dequant_level_table(bits: int, vm_a: float | None) -> tuple[float, ...]:
    """fp32 value level(c) per code c, decoded as x_hat = fp32(fp32(level(c) * rng) + mn): fp32(c * fp32(1 / B))
    uniformly (one multiply a kernel does in registers; level(0) = 0 and level(B) = 1 exactly for every width),
    fp32([0, a, b, 3] / 3) with VM."""
    top = (1 << bits) - 1
    if vm_a is None:
        step = round_to_f32(1.0 / top)
        return tuple(round_to_f32(c * step) for c in range(top + 1))  # c * step is exact in float64
    a, b = vm_constants(vm_a)
    return tuple(round_to_f32(level / 3.0) for level in (0.0, a, b, 3.0))


def round_to_f32(v: float) -> float:
    """v rounded to the nearest fp32 value (ties to even)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def check_quant_args(bits: int, group_size: int, vm_a: float | None) -> None:
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits} is not supported; allowed: {', '.join(map(str, QUANT_BITS))}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    if vm_a is not None:
        if bits != 2:
            raise ValueError(f"variance-minimised levels need bits=2, got bits={bits}")
        vm_constants(vm_a)  # its range check, up front: an input with no groups to quantize must fail alike


def split_groups(numel: int, group_size: int, fp32_tail: bool) -> tuple[int, int, int]:
    """(full groups, short-group length (0 = none), raw fp32 tail length)."""
    n_full, rem = divmod(numel, group_size)
    return (n_full, 0, rem) if fp32_tail else (n_full, rem, 0)


def _group_minmax(flat: torch.Tensor, n_full: int, group_size: int, short: int) -> tuple[torch.Tensor, torch.Tensor]:
    full = flat[: n_full * group_size].view(n_full, group_size)
    mins, maxs = full.amin(dim=1), full.amax(dim=1)
    if short:
        rest = flat[n_full * group_size: n_full * group_size + short]
        mins = torch.cat([mins, rest.amin().view(1)])
        maxs = torch.cat([maxs, rest.amax().view(1)])
    return mins, maxs


def group_ranges(min_f32: torch.Tensor, max_f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (mn, rng) of groups with these minima and maxima: mn = round_bf16_down(min), rng =
    round_bf16_up(fp32(max - mn)) raised to RANGE_FLOOR when it is positive but smaller, a zero of either stored as
    +0.0. Both lie on the bf16 grid.

    Rounding outward keeps every value of a group inside [mn, mn + rng], so the final clamp cannot bias codes."""
    # A zero minimum or range is stored as +0.0: which signed zero a min / max reduction returns is unspecified
    # (torch, numpy and a GPU tree reduction differ), so -0.0 must not reach the bytes.
    zero = torch.zeros((), dtype=torch.float32, device=min_f32.device)
    mins = round_bf16_down(min_f32)
    mins = torch.where(mins == 0, zero, mins)
    ranges = round_bf16_up(max_f32 - mins)
    return mins, torch.where(ranges > 0, ranges.clamp_min(RANGE_FLOOR), zero)


def group_reciprocal(ranges: torch.Tensor, bits: int) -> torch.Tensor:
    """fp32 inv = B * 2^16 / rng per group (correctly rounded), 0 where rng == 0."""
    scaled_top = torch.full_like(ranges, float(((1 << bits) - 1) * _FIXED_ONE))  # exact: < 2^24
    # A device tensor as the numerator: torch's CUDA division by a host scalar multiplies by a reciprocal instead.
    return torch.where(ranges > 0, scaled_top / ranges, torch.zeros_like(ranges))


def _row_blocks(values: torch.Tensor, group_size: int) -> list[tuple[torch.Tensor, slice]]:
    """Values that start on a group boundary as [groups, group_size] views: the full groups, then the short last
    group (if any) as a [1, short] view; each with the slice of its groups in the chunk."""
    n_full, short = divmod(values.numel(), group_size)
    blocks = [(values[: n_full * group_size].view(n_full, group_size), slice(0, n_full))] if n_full else []
    if short:
        blocks.append((values[n_full * group_size:].view(1, short), slice(n_full, n_full + 1)))
    return blocks


def _group_chunks(n_groups: int, group_size: int, device: torch.device) -> list[tuple[int, int]]:
    """[g0, g1) group ranges of about _chunk_len values; every chunk starts at a multiple of 8 values, so on a
    byte of every packed width and on a noise pair."""
    aligned = 8 // math.gcd(group_size, 8)
    per_chunk = aligned * max(1, _chunk_len(device) // (aligned * group_size))
    return [(g0, min(g0 + per_chunk, n_groups)) for g0 in range(0, n_groups, per_chunk)]


def _codes(s: torch.Tensor, noise: torch.Tensor, bits: int, vm: VmPieces | None) -> torch.Tensor:
    """uint8 codes q = min((trunc(s) + base + noise) >> 16, B) of fixed-point values s (VM maps s first)."""
    base = None
    if vm is not None:
        low, mid = s < vm.low_end, s < vm.mid_end
        f32 = {"dtype": torch.float32, "device": s.device}
        offset = torch.where(low, torch.tensor(0.0, **f32),
                             torch.where(mid, torch.tensor(vm.low_end, **f32), torch.tensor(vm.mid_end, **f32)))
        slope = torch.where(low, torch.tensor(vm.low_slope, **f32),
                            torch.where(mid, torch.tensor(vm.mid_slope, **f32), torch.tensor(vm.top_slope, **f32)))
        s = (s - offset).mul_(slope)
        base = (~low).to(torch.int64).add_((~mid).to(torch.int64)).mul_(_FIXED_ONE)
    fixed = s.to(torch.int64).add_(noise)  # trunc: s >= 0
    if base is not None:
        fixed.add_(base)
    return (fixed >> NOISE_BITS).clamp_max_((1 << bits) - 1).to(torch.uint8)


def quantize_pack_ref(x: torch.Tensor, bits: int, group_size: int, seed: int, vm_a: float | None = None,
                      fp32_tail: bool = False) -> PackedRef:
    """Stochastically quantize ``x`` to ``bits``-bit codes in groups of ``group_size`` flat values and pack them, with
    the arithmetic of the module docstring (group_ranges, group_reciprocal, rounding_noise, VM map, code clamp).

    Codes of all non-tail values are packed with ``pack_codes``; the metadata is (mn, rng) in bfloat16. Requires
    finite x with |x| < 3.38e38 (the largest bf16 value)."""
    check_quant_args(bits, group_size, vm_a)
    flat = x.detach().reshape(-1).to(torch.float32)
    n_full, short, tail_len = split_groups(flat.numel(), group_size, fp32_tail)
    n_packed = n_full * group_size + short
    tail = flat[n_packed:].clone() if tail_len else None

    mins, ranges = group_ranges(*_group_minmax(flat, n_full, group_size, short))
    inv = group_reciprocal(ranges, bits)
    vm = None if vm_a is None else vm_pieces(vm_a)
    keys = hash_keys(seed)
    payload = torch.empty(-(-n_packed * bits // 8), dtype=torch.uint8, device=flat.device)
    for g0, g1 in _group_chunks(n_full + (short > 0), group_size, flat.device):
        start, stop = g0 * group_size, min(g1 * group_size, n_packed)
        values = flat[start:stop]
        s = torch.empty_like(values)
        for (rows, groups), (out_rows, _) in zip(_row_blocks(values, group_size), _row_blocks(s, group_size)):
            torch.mul(rows - mins[g0:g1][groups, None], inv[g0:g1][groups, None], out=out_rows)
        codes = _codes(s, _noise_chunk(keys, start, stop, flat.device), bits, vm)
        payload[start * bits // 8: -(-stop * bits // 8)] = _pack(codes, bits)
    return PackedRef(payload, mins.to(torch.bfloat16), ranges.to(torch.bfloat16), tail)


def check_packed_layout(payload: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor, tail: torch.Tensor | None,
                        shape: torch.Size | tuple[int, ...], bits: int, group_size: int,
                        vm_a: float | None) -> tuple[int, int]:
    """(numel, number of packed values) of a packed tensor, after checking that its parts fit ``shape``: a
    corrupt layout must fail loudly rather than be decoded into garbage."""
    check_quant_args(bits, group_size, vm_a)
    numel = math.prod(shape)
    tail_len = 0 if tail is None else tail.numel()
    n_packed = numel - tail_len
    n_full, short = divmod(n_packed, group_size)
    if tail_len and short:
        raise ValueError(f"a raw tail of {tail_len} values leaves a short group of {short}; the layout is corrupt")
    if mins.numel() != n_full + (short > 0) or ranges.numel() != mins.numel():
        raise ValueError(f"expected {n_full + (short > 0)} group minima/ranges, got {mins.numel()}/{ranges.numel()}")
    n_bytes = -(-n_packed * bits // 8)
    if payload.numel() != n_bytes:
        raise ValueError(f"{n_packed} codes of {bits} bits need {n_bytes} bytes, got {payload.numel()}")
    return numel, n_packed


def unpack_dequantize_ref(payload: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor,
                          tail: torch.Tensor | None, shape: torch.Size | tuple[int, ...], bits: int,
                          group_size: int, vm_a: float | None = None) -> torch.Tensor:
    """Inverse of ``quantize_pack_ref``: fp32 tensor of ``shape`` with ``x_hat = fp32(fp32(level(q) * rng) + mn)``
    (``level = dequant_level_table(bits, vm_a)``); the fp32 tail is copied back."""
    numel, n_packed = check_packed_layout(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    table = torch.tensor(dequant_level_table(bits, vm_a), dtype=torch.float32, device=payload.device)
    mins_f32, ranges_f32 = mins.to(torch.float32), ranges.to(torch.float32)
    out = torch.empty(numel, dtype=torch.float32, device=payload.device)
    for g0, g1 in _group_chunks(mins.numel(), group_size, payload.device):
        start, stop = g0 * group_size, min(g1 * group_size, n_packed)
        codes = unpack_codes(payload[start * bits // 8: -(-stop * bits // 8)], bits, stop - start)
        levels = table[codes.to(torch.int64)]
        for (rows, groups), (out_rows, _) in zip(_row_blocks(levels, group_size),
                                                 _row_blocks(out[start:stop], group_size)):
            torch.add(rows.mul_(ranges_f32[g0:g1][groups, None]), mins_f32[g0:g1][groups, None], out=out_rows)
    if tail is not None:
        out[n_packed:] = tail.to(torch.float32)
    return out.view(tuple(shape))


# --------------------------------------------------------------------------------------------- other streams


def sign_words_per_row(r: int) -> int:
    """Hashes per row of a D x r projection: each supplies the signs of 32 consecutive entries."""
    return -(-r // SIGNS_PER_WORD)


def rademacher_ref(seed: int, d: int, r: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d, r) random projection with entries +-1/sqrt(r): entry (i, j) is negative iff bit (j & 31) of
    ``hash_uint32(seed, i * sign_words_per_row(r) + (j >> 5))`` is set. E[M M^T] = I, so x ~ (x M) M^T without
    bias."""
    if d < 1 or r < 1:
        raise ValueError(f"projection needs d >= 1 and r >= 1, got d={d}, r={r}")
    words = sign_words_per_row(r)
    h = hash_uint32(seed, torch.arange(d * words, dtype=torch.int64, device=device)).view(d, words, 1)
    bit = torch.arange(SIGNS_PER_WORD, dtype=torch.int64, device=h.device)
    negative = ((h >> bit) & 1).view(d, words * SIGNS_PER_WORD)[:, :r] == 1
    scale = 1.0 / math.sqrt(r)
    signs = torch.where(negative, -scale, scale)
    return signs.to(dtype)


def project_rademacher_ref(x2d: torch.Tensor, seed: int, r: int) -> torch.Tensor:
    """``x2d @ rademacher_ref(seed, D, r)`` as an (N, r) fp32 tensor, in an order a kernel can reproduce bit for bit.

    Per output (n, j), with ``x = x2d.to(fp32)`` and s(d, j) the sign of entry (d, j) of ``rademacher_ref``::

        acc = 0.0 (fp32)
        for d in 0 .. D-1 (in this order):  acc = acc + (x[n, d] if s(d, j) > 0 else -x[n, d])   (one fp32 add)
        out[n, j] = acc * fp32(1 / sqrt(r))                                                      (one fp32 multiply)

    A matmul sums in an unspecified (blocked, FMA-contracted) order, so it agrees only to fp32 tolerance."""
    if x2d.dim() != 2:
        raise ValueError(f"project_rademacher_ref expects an N x D input, got shape {tuple(x2d.shape)}")
    n_rows, d = x2d.shape
    if d < 1 or r < 1:
        raise ValueError(f"projection needs d >= 1 and r >= 1, got d={d}, r={r}")
    x = x2d.detach()
    # +-1 signs: the product x * (+-1) is exact, so addcmul_ (fused or not) rounds once per step, like acc + (+-x).
    signs = torch.sign(rademacher_ref(seed, d, r, device=x.device))
    scale = round_to_f32(1.0 / math.sqrt(r))  # rademacher_ref's entry magnitude, rounded once to fp32
    out = torch.empty(n_rows, r, dtype=torch.float32, device=x.device)
    # Rows per chunk: the D passes over an (rows, r) accumulator are fastest while it stays in cache (CPU; ~1 MiB
    # measured best); a GPU wants few, large launches.
    step = max(1, (1 << 18) // r) if x.device.type == "cpu" else max(1, _chunk_len(x.device) // max(d, r))
    for start in range(0, n_rows, step):
        chunk = x[start:start + step].to(torch.float32)
        acc = torch.zeros(chunk.shape[0], r, dtype=torch.float32, device=x.device)  # +0.0, so acc is never -0.0
        for col in range(d):
            acc.addcmul_(chunk[:, col:col + 1], signs[col])
        out[start:start + step] = acc.mul_(scale)
    return out


def project_quantize_pack_ref(x2d: torch.Tensor, r: int, proj_seed: int, bits: int, group_size: int, seed: int,
                              vm_a: float | None = None, fp32_tail: bool = False) -> PackedRef:
    """``quantize_pack_ref(project_rademacher_ref(x2d, proj_seed, r), bits, group_size, seed, vm_a, fp32_tail)``:
    the projected N x r tensor quantized with noise indexed by flat offsets in that tensor."""
    check_quant_args(bits, group_size, vm_a)
    return quantize_pack_ref(project_rademacher_ref(x2d, proj_seed, r), bits, group_size, seed, vm_a, fp32_tail)


def dropout_mask_ref(seed: int, shape: torch.Size | tuple[int, ...], p: float,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Keep-mask of dropout with drop probability p: keep element i iff uniform_from_hash(hash_uint32(seed, i))
    >= p, evaluated exactly as the integer test (h >> 8) >= ceil(p * 2^24)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    threshold = math.ceil(p * 2**24)  # p * 2^24 is exact in float64, so this is the same test as u >= p
    h = hash_uint32(seed, torch.arange(math.prod(shape), dtype=torch.int64, device=device))
    return ((h >> 8) >= threshold).view(tuple(shape))
