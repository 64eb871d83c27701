"""Pure-torch reference of the packed INT-b activation layout, its random stream and its arithmetic.

Everything here is specified down to the bit so that a GPU kernel can reproduce it byte for byte:

* randomness is a counter-based hash of ``(seed, element offset)`` built from uint32 multiply/xor/shift/add
  steps (``hash_uint32``); nothing depends on torch's global RNG;
* integer steps run in int64 torch arithmetic masked to 32 bits, so they are exact on every backend;
* floating-point steps are single IEEE-754 fp32 operations with round-to-nearest-even, in the order written
  in the docstrings (a kernel must not contract them into FMAs and must use correctly rounded division).

Layout of a quantized tensor (``quantize_pack_ref``): the input is flattened row-major into fp32 and cut into
groups of ``group_size`` consecutive values. Each group stores its minimum and range as bfloat16 and every
value as a ``bits``-bit code, packed little-endian within bytes (``pack_codes``). A ragged last group is either
quantized as a short group with its own metadata or, with ``fp32_tail``, kept raw in fp32.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import NamedTuple

import torch

__all__ = [
    "PACK_BITS",
    "QUANT_BITS",
    "PackedRef",
    "dequant_level_table",
    "dropout_mask_ref",
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
    "substream_seed",
    "uniform_from_hash",
    "unpack_codes",
    "unpack_dequantize_ref",
    "unpack_mask_ref",
    "vm_constants",
]

PACK_BITS = (1, 2, 4, 8)
QUANT_BITS = (1, 2, 4, 8)  # quant_ref itself accepts every packable width; the public API narrows this.

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_FMIX_C1 = 0x85EBCA6B
_FMIX_C2 = 0xC2B2AE35
_SEED_HI_SALT = 0x9E3779B9
_SEED_LO_SALT = 0x7F4A7C15
_SUBSTREAM_GOLDEN = 0x9E3779B97F4A7C15
_UNIFORM_SCALE = 2.0**-24


# --------------------------------------------------------------------------------------------- hashing


def _fmix32_int(h: int) -> int:
    h &= _MASK32
    h ^= h >> 16
    h = (h * _FMIX_C1) & _MASK32
    h ^= h >> 13
    h = (h * _FMIX_C2) & _MASK32
    h ^= h >> 16
    return h


def _fmix32_(h: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finalizer, in place, on int64 tensors holding uint32 values.

    int64 products of two uint32 values can exceed 2^63; torch's int64 multiply wraps modulo 2^64 (two's
    complement, CPU and CUDA), so the low 32 bits kept by the mask are exactly those of the uint32 product
    (the tests check the whole hash against Python integers)."""
    h.bitwise_xor_(h >> 16)
    h.mul_(_FMIX_C1).bitwise_and_(_MASK32)
    h.bitwise_xor_(h >> 13)
    h.mul_(_FMIX_C2).bitwise_and_(_MASK32)
    return h.bitwise_xor_(h >> 16)


def _chunk_len(device: torch.device) -> int:
    # Cache-sized pieces make the ~20 elementwise passes on CPU several times faster; GPUs want big launches.
    return 1 << 16 if device.type == "cpu" else 1 << 24


def hash_keys(seed: int) -> tuple[int, int]:
    """The two 32-bit keys of a 64-bit seed; (k1, k2) is a bijection of the seed, so distinct seeds never share
    a stream. A kernel may take them as scalar arguments instead of recomputing them."""
    seed &= _MASK64
    s_lo, s_hi = seed & _MASK32, seed >> 32
    k1 = _fmix32_int(s_lo ^ _fmix32_int(s_hi ^ _SEED_HI_SALT))
    k2 = _fmix32_int(s_hi ^ _SEED_LO_SALT)
    return k1, k2


def hash_uint32(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """Counter-based hash of (seed, element offset); returns int64 values in [0, 2^32).

    All arithmetic is modulo 2^32 (uint32 in a kernel); ``fmix32(h)`` is murmur3's finalizer::

        fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16

        seed   <- seed mod 2^64;  s_lo = seed & 0xFFFFFFFF;  s_hi = seed >> 32
        k1     = fmix32(s_lo ^ fmix32(s_hi ^ 0x9E3779B9))
        k2     = fmix32(s_hi ^ 0x7F4A7C15)
        o_lo   = offset & 0xFFFFFFFF;  o_hi = offset >> 32          (offset >= 0, int64)
        h      = fmix32(o_lo ^ k1)
        h      = fmix32((h ^ o_hi) + k2)                               (+ wraps mod 2^32)

    ``offsets`` must be a non-negative integer tensor; the result has its shape and device.
    """
    if offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
        raise ValueError(f"offsets must be an integer tensor, got {offsets.dtype}")
    flat = offsets.reshape(-1).to(torch.int64)
    out = torch.empty_like(flat)
    step = _chunk_len(flat.device)
    for start in range(0, flat.numel(), step):
        out[start:start + step] = _hash_chunk(seed, flat[start:start + step])
    return out.view(offsets.shape)


def _hash_chunk(seed: int, off: torch.Tensor) -> torch.Tensor:
    k1, k2 = hash_keys(seed)
    h = _fmix32_(torch.bitwise_and(off, _MASK32).bitwise_xor_(k1))
    h.bitwise_xor_(off >> 32).add_(k2).bitwise_and_(_MASK32)
    return _fmix32_(h)


def uniform_from_hash(h: torch.Tensor) -> torch.Tensor:
    """fp32 uniform in [0, 1) from the top 24 bits of a hash: (h >> 8) * 2^-24 (exact in fp32)."""
    return (h >> 8).to(torch.float32).mul_(_UNIFORM_SCALE)


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


@lru_cache(maxsize=64)
def dequant_level_table(bits: int, vm_a: float | None) -> tuple[float, ...]:
    """fp32 values of level(c) / B per code c: c / B uniformly, [0, a, b, 3] / 3 with VM (rounded once to fp32)."""
    top = (1 << bits) - 1
    if vm_a is None:
        return tuple(round_to_f32(c / top) for c in range(top + 1))
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


def _vm_to_uniform_grid(h: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Piecewise-linear map of [0, a], [a, b], [b, 3] onto [0, 1], [1, 2], [2, 3]; each piece one fp32
    subtract, one divide, one add, with divisors a, fp32(b - a) and fp32(3 - b)."""
    # Divisors as device tensors: torch's CUDA division by a host scalar multiplies by its reciprocal instead.
    a_t, mid_t, top_t = (torch.tensor(v, dtype=torch.float32, device=h.device) for v in (a, b - a, 3.0 - b))
    low_piece = h / a_t
    mid_piece = (h - a).div_(mid_t).add_(1.0)
    top_piece = (h - b).div_(top_t).add_(2.0)
    return torch.where(h < a, low_piece, torch.where(h < b, mid_piece, top_piece))


def quantize_pack_ref(x: torch.Tensor, bits: int, group_size: int, seed: int, vm_a: float | None = None,
                      fp32_tail: bool = False) -> PackedRef:
    """Stochastically quantize ``x`` to ``bits``-bit codes in groups of ``group_size`` flat values and pack them.

    Per group g (fp32 arithmetic, B = 2^bits - 1):

    * ``mn = round_bf16_down(min_g x)``, ``rng = round_bf16_up(max_g x - mn)`` (fp32 subtraction; both are
      stored as bf16 without further rounding). Rounding outward keeps every value of the group inside
      [mn, mn + rng] (up to the fp32 rounding of that subtraction), so the final clamp cannot bias the codes;
    * ``h = ((x - mn) / rng) * B``, or ``h = 0`` where ``rng == 0``;
    * VM (bits == 2, ``vm_a`` given): ``h`` is mapped onto the uniform grid by ``_vm_to_uniform_grid``;
    * ``q = clamp(floor(h + u), 0, B)`` with ``u = uniform_from_hash(hash_uint32(seed, i))`` and ``i`` the
      element's flat offset in ``x``.

    Codes of all non-tail values are packed with ``pack_codes``. Requires finite x with |x| < 3.38e38 (the
    largest bf16 value).
    """
    check_quant_args(bits, group_size, vm_a)
    flat = x.detach().reshape(-1).to(torch.float32)
    n_full, short, tail_len = split_groups(flat.numel(), group_size, fp32_tail)
    n_packed = n_full * group_size + short
    tail = flat[n_packed:].clone() if tail_len else None

    min_f32, max_f32 = _group_minmax(flat, n_full, group_size, short)
    mins = round_bf16_down(min_f32)
    ranges = round_bf16_up(max_f32 - mins)

    top = float((1 << bits) - 1)
    vm = None if vm_a is None else vm_constants(vm_a)
    payload = torch.empty(-(-n_packed * bits // 8), dtype=torch.uint8, device=flat.device)
    step = _chunk_len(flat.device)  # a multiple of 8 codes, so every chunk starts on a byte boundary
    for start in range(0, n_packed, step):
        stop = min(start + step, n_packed)
        offsets = torch.arange(start, stop, dtype=torch.int64, device=flat.device)
        group = offsets // group_size
        mn, rng = mins[group], ranges[group]
        h = (flat[start:stop] - mn).div_(rng).mul_(top)
        h = torch.where(rng > 0, h, torch.zeros((), dtype=torch.float32, device=h.device))
        if vm is not None:
            h = _vm_to_uniform_grid(h, *vm)
        codes = h.add_(uniform_from_hash(_hash_chunk(seed, offsets))).floor_().clamp_(0.0, top).to(torch.uint8)
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
    """Inverse of ``quantize_pack_ref``: fp32 tensor of ``shape`` with ``x_hat = table[q] * rng + mn`` (one fp32
    multiply, then one add) where ``table = dequant_level_table(bits, vm_a)``; the fp32 tail is copied back."""
    numel, n_packed = check_packed_layout(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    table = torch.tensor(dequant_level_table(bits, vm_a), dtype=torch.float32, device=payload.device)
    mins_f32, ranges_f32 = mins.to(torch.float32), ranges.to(torch.float32)
    out = torch.empty(numel, dtype=torch.float32, device=payload.device)
    step = _chunk_len(payload.device)
    for start in range(0, n_packed, step):
        stop = min(start + step, n_packed)
        group = torch.arange(start, stop, dtype=torch.int64, device=payload.device) // group_size
        codes = unpack_codes(payload[start * bits // 8: -(-stop * bits // 8)], bits, stop - start)
        out[start:stop] = table[codes.to(torch.int64)].mul_(ranges_f32[group]).add_(mins_f32[group])
    if tail is not None:
        out[n_packed:] = tail.to(torch.float32)
    return out.view(tuple(shape))


# --------------------------------------------------------------------------------------------- other streams


def rademacher_ref(seed: int, d: int, r: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d, r) random projection with entries +-1/sqrt(r): entry (i, j) is negative iff bit 31 of
    ``hash_uint32(seed, i * r + j)`` is set. E[M M^T] = I, so x ~ (x M) M^T without bias."""
    if d < 1 or r < 1:
        raise ValueError(f"projection needs d >= 1 and r >= 1, got d={d}, r={r}")
    h = hash_uint32(seed, torch.arange(d * r, dtype=torch.int64, device=device))
    scale = 1.0 / math.sqrt(r)
    signs = torch.where((h >> 31) == 1, -scale, scale)
    return signs.to(dtype).view(d, r)


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
