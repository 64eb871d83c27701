"""Triton kernels for the packed INT-b activation layout; each mirrors its reference in ``quant_ref.py`` with the
same bit layout, the same random stream and the same fp32 operation order, so payloads, metadata and outputs are
byte-identical to the reference for the same inputs and seeds.

* ``quantize_pack_triton`` / ``unpack_dequantize_triton`` mirror ``quantize_pack_ref`` / ``unpack_dequantize_ref``;
* ``pack_mask_triton`` / ``unpack_mask_triton`` mirror ``pack_mask_ref`` / ``unpack_mask_ref``;
* ``relu_pack_triton``, ``dropout_pack_triton``, ``dropout_apply_triton`` and ``masked_scale_triton`` fuse the
  elementwise op with the 1-bit mask of ``pack_mask_ref``; dropout keeps exactly the elements ``dropout_mask_ref``
  keeps.

Exactness rests on three rules every kernel follows: hashing in uint32 arithmetic (wrapping like the reference's
masked int64 steps), the per-group reciprocal ``B * 2^16 / rng`` taken from a table of correctly rounded quotients
(``group_inverse``: exact, since ranges lie on the bf16 grid), and launches with ``enable_fp_fusion=False`` so that
a multiply followed by an add is never contracted into an FMA. Hash keys travel as int32 (``kernel_keys``), so
every keyed kernel compiles once whatever the seed. Offsets are int64 and byte counts come from the host, so nothing
wraps in int32 past 2^31 values.

Quantization takes one of two layouts, both producing the reference's bytes:

* row tiles (groups of even length whose codes fill whole bytes): ROWS groups per program as [ROWS, HALF, 2]
  tiles, value 2j + t of a chunk at [:, j, t], so one hash serves both values of a noise pair; a group fits one
  chunk (fused: the tile stays in registers) or is walked in n_chunks chunks twice (looped: min/max, then codes).
  Groups of at most ``_THREAD_ROW_MAX`` values get their min/max one thread per group. Programs whose groups are
  complete and tile their chunks exactly run without bounds checks; one checked launch covers the rest;
* general (groups that end mid-byte, or of odd length): a statistics kernel (one group per thread) writes the
  metadata and (mn, inv) per group, then a flat kernel over byte-aligned blocks fetches each value's (mn, inv) by
  its group, found with a multiply-high from the program's first group (an fp64 reciprocal, no 64-bit division).

Dequantization uses the same two layouts (row tiles where the quantize kernels use them, else flat).

On CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before ``import triton``).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import torch

from sustainml_kernels.quant_ref import (
    RANGE_FLOOR,
    PackedRef,
    check_packed_layout,
    check_quant_args,
    dequant_level_table,
    hash_keys,
    split_groups,
    vm_pieces,
)

try:
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
    _RANGE_FLOOR = tl.constexpr(RANGE_FLOOR)  # jit functions read module globals only as constexpr
except ImportError:  # the module must stay importable (and report itself unusable) without triton
    TRITON_AVAILABLE = False

    def _jit_stub(fn=None, **_options):
        return fn if fn is not None else (lambda inner: inner)

    triton = SimpleNamespace(jit=_jit_stub, cdiv=lambda a, b: -(-a // b))
    tl = SimpleNamespace()

__all__ = [
    "MAX_GROUP_TILE",
    "TRITON_AVAILABLE",
    "dropout_apply_triton",
    "dropout_pack_triton",
    "masked_scale_triton",
    "pack_mask_triton",
    "quantize_pack_triton",
    "relu_pack_triton",
    "triton_usable",
    "unpack_dequantize_triton",
    "unpack_mask_triton",
]

MAX_GROUP_TILE = 4096  # widest group held in registers at once; wider groups are walked in chunks of this size
_TILE_ELEMS = 1024  # values per program in the fused path (several small groups share one program)
_VALUES_PER_THREAD = 32  # register tiles hold this many values per thread (one warp per 1024 values)
_STATS_ROWS, _STATS_UNROLL = 128, 16  # general path step 1: one group per thread, loads unrolled up to 16
_MIN_EXACT_CHUNK = 32  # smaller power-of-two chunks of a group cost more per value than padding does
_THREAD_ROW_MAX = 16  # groups up to this long get their statistics one thread per group
_FLAT_BLOCK = 4096  # values per program of the general path's flat kernel: a multiple of 8 (whole bytes, pairs)
_DEQUANT_VALUES = 4096  # values per program of the dequantize kernel
_MASK_BLOCK_BYTES = 128  # packed mask bytes per program (1024 elements)
_ELEMENTWISE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_NO_FMA = {"enable_fp_fusion": False}  # the reference multiplies and adds in two roundings
# Hash keys vary with every seed: specialising on their values would recompile per seed (and turn a key that
# happens to equal 1 into a constexpr without .to()).
_HASH_KEY_ARGS = ("hash_k1", "hash_k2")
_DROPOUT_SCALAR_ARGS = (*_HASH_KEY_ARGS, "keep_threshold")
# Per-group-size constants whose values say nothing about the code: specialising on them only multiplies variants.
_GROUP_INDEX_ARGS = ("group_magic", "group_rcp_bits")
_TILE_ARGS = ("tile_base", "n_chunks")  # launch geometry, not code: one variant for every value


# --------------------------------------------------------------------------------------------- availability


def kernel_keys(seed: int) -> tuple[int, int]:
    """hash_keys(seed) as int32 values (two's complement): Triton types an integer argument i32 or i64 by its
    value, so keys passed as they are would compile every keyed kernel twice (keys >= 2^31 are i64)."""
    return tuple(k - (1 << 32) if k >= 1 << 31 else k for k in hash_keys(seed))


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_usable(device: torch.device | str) -> bool:
    """Whether the kernels can run on ``device``: CUDA with triton installed, or CPU under Triton's interpreter."""
    if not TRITON_AVAILABLE:
        return False
    device_type = torch.device(device).type
    if device_type == "cuda":
        return True
    return device_type == "cpu" and _interpreter_requested()


def _require_usable(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if not triton_usable(t.device):
            if not TRITON_AVAILABLE:
                raise ValueError("triton is not installed; use the quant_ref reference functions instead")
            raise ValueError(f"Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 (set before importing triton) "
                             f"for CPU tensors; got a tensor on {t.device}")


def _check_elementwise_dtype(x: torch.Tensor) -> None:
    if x.dtype not in _ELEMENTWISE_DTYPES:
        raise ValueError(f"expected a float16, bfloat16 or float32 tensor, got {x.dtype}")


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# --------------------------------------------------------------------------------------------- device helpers


@triton.jit
def hash_at(counters, hash_k1, hash_k2):
    """hash_uint32 of int64 ``counters`` for the int32 keys of ``kernel_keys(seed)``, as uint32 (quant_ref's
    recipe)."""
    x = (counters & 0xFFFFFFFF).to(tl.uint32) ^ hash_k1.to(tl.uint32, bitcast=True)
    x ^= x >> 17
    x = x * 0xED5AD4BB
    x += (counters >> 32).to(tl.uint32) ^ hash_k2.to(tl.uint32, bitcast=True)
    x ^= x >> 11
    x = x * 0xAC4C1B51
    x ^= x >> 15
    x = x * 0x31848BAB
    return x ^ (x >> 14)


@triton.jit
def round_to_bf16_grid(x, UP: tl.constexpr):
    """round_bf16_up / round_bf16_down on the fp32 bit pattern (integer ops only, so no rounding mode matters)."""
    bits = x.to(tl.uint32, bitcast=True)
    negative = (bits >> 31) == 1
    toward_zero = bits & 0xFFFF0000
    away_from_zero = (bits + 0xFFFF) & 0xFFFF0000
    if UP:
        rounded = tl.where(negative, toward_zero, away_from_zero)
    else:
        rounded = tl.where(negative, away_from_zero, toward_zero)
    return rounded.to(tl.float32, bitcast=True)


@triton.jit
def to_f32_exact(v):
    """Exact widening to fp32; bf16 through its bits (Triton's interpreter mis-converts bf16 subnormals)."""
    if v.dtype == tl.bfloat16:
        return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return v.to(tl.float32)


@triton.jit
def bf16_exact(v):
    """An fp32 value already on the bf16 grid as bf16: its top 16 bits (exact, and right in the interpreter too)."""
    return (v.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def group_range(group_min, group_max):
    """quant_ref.group_ranges: bf16-down minimum, bf16-up (max - mn) raised to RANGE_FLOOR when positive, zeros
    as +0.0."""
    mn = round_to_bf16_grid(group_min, False)
    mn = mn + 0.0  # +0.0 whichever zero the reduction returned (-0.0 + 0.0 = +0.0; nothing else changes)
    rng = round_to_bf16_grid(group_max - mn, True)
    return mn, tl.where(rng > 0, tl.maximum(rng, _RANGE_FLOOR), 0.0)


@triton.jit
def group_inverse(rng, inverse_table_ptr):
    """quant_ref.group_reciprocal, B * 2^16 / rng correctly rounded (0 where rng == 0), without a division: rng is
    on the bf16 grid, (1 + m / 128) * 2^e, so the quotient is the table entry fp32(B * 2^16 / (1 + m / 128)) scaled
    by 2^-e, an exact exponent shift (rng in [RANGE_FLOOR, bf16 max] keeps every result normal)."""
    bits = rng.to(tl.int32, bitcast=True)
    entry = tl.load(inverse_table_ptr + ((bits >> 16) & 0x7F))
    # rng >= 0, so its exponent field is bits & 0x7F800000: subtract (e - 127) << 23 from the entry's.
    inverse = (entry + 0x3F800000 - (bits & 0x7F800000)).to(tl.float32, bitcast=True)
    return tl.where(rng > 0, inverse, 0.0)


@triton.jit
def fixed_point(x, mn, inv, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                USE_VM: tl.constexpr):
    """trunc(s) + base as int32, s = fp32(fp32(x - mn) * inv) mapped by the VM pieces (quant_ref's order)."""
    s = (x - mn) * inv
    if USE_VM:
        low = s < vm_low_end
        mid = s < vm_mid_end
        offset = tl.where(low, 0.0, tl.where(mid, vm_low_end, vm_mid_end))
        slope = tl.where(low, vm_low_slope, tl.where(mid, vm_mid_slope, vm_top_slope))
        base = tl.where(low, 0, tl.where(mid, 65536, 131072))
        return ((s - offset) * slope).to(tl.int32) + base
    else:
        return s.to(tl.int32)


@triton.jit
def pair_noise(pairs, hash_k1, hash_k2):
    """int32 [..., 2] rounding noise of elements (2p, 2p + 1) for int64 pair counters p: one hash, low half first."""
    h = hash_at(pairs, hash_k1, hash_k2)
    return tl.join(h & 0xFFFF, h >> 16).to(tl.int32)


@triton.jit
def round_codes(fixed, noise, LEVELS_TOP: tl.constexpr):
    """Codes min((fixed + noise) >> 16, B)."""
    return tl.minimum((fixed + noise) >> 16, LEVELS_TOP)


@triton.jit
def pack_pairs(codes, ROWS: tl.constexpr, HALF: tl.constexpr, BITS: tl.constexpr):
    """[ROWS, HALF, 2] codes (element 2j + t of a row at [:, j, t]) -> [ROWS, HALF * 2 * BITS // 8] bytes, code i
    at bit (i * BITS) % 8 of byte (i * BITS) // 8."""
    if BITS == 8:
        return tl.reshape(codes, (ROWS, 2 * HALF)).to(tl.uint8)
    else:
        pair = tl.sum(codes << (tl.arange(0, 2) * BITS)[None, None, :], axis=2)  # 2 * BITS bits, distinct: sum == or
        PAIRS_PER_BYTE: tl.constexpr = 4 // BITS
        if PAIRS_PER_BYTE == 1:
            return pair.to(tl.uint8)
        else:
            by_byte = tl.reshape(pair, (ROWS, HALF // PAIRS_PER_BYTE, PAIRS_PER_BYTE))
            shifts = tl.arange(0, PAIRS_PER_BYTE) * (2 * BITS)
            return tl.sum(by_byte << shifts[None, None, :], axis=2).to(tl.uint8)


@triton.jit
def group_of(local, phase, group_size, group_magic, GROUP_INDEX: tl.constexpr):
    """Group of the element ``local`` values after a program's first element, which sits ``phase`` values into its
    group: (phase + local) // group_size without a division (int32; GROUP_INDEX says how)."""
    t = phase + local
    if GROUP_INDEX == 0:  # 2 <= group_size <= values per program: multiply-high by ceil(2^32 / group_size)
        return tl.umulhi(t.to(tl.uint32), group_magic.to(tl.uint32, bitcast=True)).to(tl.int32)
    elif GROUP_INDEX == 1:  # groups longer than a program: at most one boundary
        return (t >= group_size).to(tl.int32)
    else:  # group_size == 1
        return t


# --------------------------------------------------------------------------------------------- quantize kernels


@triton.jit
def _load_rows(x_ptr, group_start, group_len, group_valid, chunk, HALF: tl.constexpr, MASKED: tl.constexpr):
    """Chunk ``chunk`` of each row as a [ROWS, HALF, 2] fp32 tile, and its validity (None unless MASKED: whole
    groups). Masked-off values are NaN, which min and max skip."""
    # Loaded as [ROWS, 2 * HALF] (wide vector loads), then split into pairs.
    cols = chunk * (2 * HALF) + tl.arange(0, 2 * HALF)[None, :]
    ptrs = x_ptr + group_start[:, None] + cols
    ROWS: tl.constexpr = group_start.shape[0]
    if MASKED:
        valid = group_valid[:, None] & (cols < group_len[:, None])
        x = to_f32_exact(tl.load(ptrs, mask=valid, other=float("nan")))
        return tl.reshape(x, (ROWS, HALF, 2)), tl.reshape(valid, (ROWS, HALF, 2))
    else:
        return tl.reshape(to_f32_exact(tl.load(ptrs)), (ROWS, HALF, 2)), None


@triton.jit
def _thread_row_bounds(x_ptr, group_start, group_len, group_size, ROWS: tl.constexpr, UNROLL: tl.constexpr,
                       MASKED: tl.constexpr):
    """(min, max) of each of ROWS groups, one group per thread, UNROLL values per step (UNROLL divides
    group_size; with MASKED, values past a group's own length are skipped)."""
    lo = tl.full([ROWS], float("inf"), tl.float32)
    hi = tl.full([ROWS], float("-inf"), tl.float32)
    ptrs = x_ptr + tl.reshape(group_start, (ROWS,), can_reorder=True)
    if MASKED:
        lens = tl.reshape(group_len, (ROWS,), can_reorder=True)
    for first in range(0, group_size, UNROLL):
        for step in tl.static_range(UNROLL):
            if MASKED:
                x = tl.load(ptrs + (first + step), mask=first + step < lens, other=float("nan"))
            else:
                x = tl.load(ptrs + (first + step))
            lo = tl.minimum(lo, to_f32_exact(x))
            hi = tl.maximum(hi, to_f32_exact(x))
    return lo, hi


@triton.jit
def _row_bounds(x):
    return tl.min(tl.min(x, axis=2), axis=1), tl.max(tl.max(x, axis=2), axis=1)


@triton.jit
def quantize_rows(x, valid, payload_ptr, group_start, group_bytes, group_valid, mn, inv, chunk,
                  hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                  BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr, ROWS: tl.constexpr,
                  HALF: tl.constexpr, MASKED: tl.constexpr):
    """Quantize and pack chunk ``chunk`` (values x, [ROWS, HALF, 2]) of ROWS groups of even length whose codes
    fill whole bytes; ``valid``, ``group_bytes`` and ``group_valid`` matter only when MASKED."""
    fixed = fixed_point(x, mn[:, None, None], inv[:, None, None], vm_low_end, vm_mid_end, vm_low_slope,
                        vm_mid_slope, vm_top_slope, USE_VM)
    pairs = (group_start >> 1)[:, None] + (chunk * HALF + tl.arange(0, HALF))[None, :]  # group_start is even
    noise = pair_noise(pairs, hash_k1, hash_k2)
    CHUNK_BYTES: tl.constexpr = 2 * HALF * BITS // 8
    byte_cols = chunk * CHUNK_BYTES + tl.arange(0, CHUNK_BYTES)
    # group_start * BITS is a multiple of 8 because group_size * BITS is.
    ptrs = payload_ptr + (group_start * BITS // 8)[:, None] + byte_cols[None, :]
    if MASKED:
        # Padding codes must be 0: they share the last byte of a short group with real codes.
        packed = pack_pairs(tl.where(valid, round_codes(fixed, noise, LEVELS_TOP), 0), ROWS, HALF, BITS)
        tl.store(ptrs, packed, mask=group_valid[:, None] & (byte_cols[None, :] < group_bytes[:, None]))
    else:
        tl.store(ptrs, pack_pairs(round_codes(fixed, noise, LEVELS_TOP), ROWS, HALF, BITS))


@triton.jit(do_not_specialize=(*_HASH_KEY_ARGS, *_TILE_ARGS))
def _quantize_aligned_kernel(x_ptr, payload_ptr, mins_ptr, ranges_ptr, inverse_table_ptr, n_packed, n_groups,
                             group_size, tile_base, n_chunks,
                             hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                             BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr,
                             ROWS: tl.constexpr, HALF: tl.constexpr, LOOPED: tl.constexpr, MASKED: tl.constexpr,
                             ROW_UNROLL: tl.constexpr):
    """Whole groups of even length whose codes fill whole bytes, ROWS groups per program (tile_base + program id),
    each walked in n_chunks chunks of 2 * HALF values held as [ROWS, HALF, 2] tiles (value 2j + t of a chunk at
    [:, j, t], so one hash serves both values of a pair). One chunk (LOOPED=False): the tile stays in registers;
    several: two passes, min/max then codes. MASKED=False (the chunks tile every group of the program exactly)
    drops all bounds checks: the launch for the bulk."""
    groups = (tile_base + tl.program_id(0)).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    group_start = groups * group_size
    if MASKED:
        group_valid = groups < n_groups
        group_len = tl.minimum(n_packed - group_start, group_size).to(tl.int32)  # the short last group's own length
        group_bytes = (group_len * BITS + 7) // 8
    else:
        group_valid, group_len, group_bytes = None, None, None
    if ROW_UNROLL:
        # Short groups: a row tile spreads each group over several threads, which would all repeat the per-group
        # work below. One thread per group walks it value by value instead (the tile's loads then hit the cache).
        lo, hi = _thread_row_bounds(x_ptr, group_start, group_len, group_size, ROWS, ROW_UNROLL, MASKED)
        x, valid = _load_rows(x_ptr, group_start, group_len, group_valid, 0, HALF, MASKED)
    elif not LOOPED:
        x, valid = _load_rows(x_ptr, group_start, group_len, group_valid, 0, HALF, MASKED)
        lo, hi = _row_bounds(x)
    else:
        lo = tl.full([ROWS], float("inf"), tl.float32)
        hi = tl.full([ROWS], float("-inf"), tl.float32)
        for chunk in range(n_chunks):
            x, valid = _load_rows(x_ptr, group_start, group_len, group_valid, chunk, HALF, MASKED)
            chunk_lo, chunk_hi = _row_bounds(x)
            lo = tl.minimum(lo, chunk_lo)
            hi = tl.maximum(hi, chunk_hi)
    mn, rng = group_range(lo, hi)
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)
    inv = group_inverse(rng, inverse_table_ptr)
    vm = (vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope)
    if not LOOPED:
        quantize_rows(x, valid, payload_ptr, group_start, group_bytes, group_valid, mn, inv, 0, hash_k1, hash_k2, *vm,
                      BITS, LEVELS_TOP, USE_VM, ROWS, HALF, MASKED)
    else:
        for chunk in range(n_chunks):  # second pass: the group was just read, so these loads hit the cache
            x, valid = _load_rows(x_ptr, group_start, group_len, group_valid, chunk, HALF, MASKED)
            quantize_rows(x, valid, payload_ptr, group_start, group_bytes, group_valid, mn, inv, chunk, hash_k1,
                          hash_k2, *vm, BITS, LEVELS_TOP, USE_VM, ROWS, HALF, MASKED)


@triton.jit(do_not_specialize=("tile_base",))
def _group_stats_kernel(x_ptr, mins_ptr, ranges_ptr, stats_ptr, inverse_table_ptr, n_packed, n_groups, group_size,
                        tile_base, ROWS: tl.constexpr, UNROLL: tl.constexpr, MASKED: tl.constexpr):
    """General path, step 1: mins and ranges of every group (any length), and (mn, inv) in fp32 for step 2. One
    group per thread (``_thread_row_bounds``): groups that end mid-byte have no aligned vector loads anyway."""
    groups = (tile_base + tl.program_id(0)).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    group_start = groups * group_size
    if MASKED:
        group_valid = groups < n_groups
        group_len = tl.where(group_valid, tl.minimum(n_packed - group_start, group_size), 0).to(tl.int32)
    else:
        group_valid, group_len = None, None
    lo, hi = _thread_row_bounds(x_ptr, group_start, group_len, group_size, ROWS, UNROLL, MASKED)
    mn, rng = group_range(lo, hi)
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)
    tl.store(stats_ptr + 2 * groups, mn, mask=group_valid)
    tl.store(stats_ptr + 2 * groups + 1, group_inverse(rng, inverse_table_ptr), mask=group_valid)


@triton.jit
def _program_start(program_base, group_size, group_rcp_bits, BLOCK: tl.constexpr):
    """(first value, its group, its offset in that group) of this program's BLOCK values (program program_base +
    program id), without a 64-bit division: an fp64 multiply by 1 / group_size (its bits in ``group_rcp_bits``) and
    one correction step, exact while the quotient stays below 2^51 (any tensor a GPU holds)."""
    start = (program_base + tl.program_id(0)).to(tl.int64) * BLOCK
    first_group = (start.to(tl.float64) * group_rcp_bits.to(tl.float64, bitcast=True)).to(tl.int64)
    phase = start - first_group * group_size
    first_group = tl.where(phase < 0, first_group - 1, tl.where(phase >= group_size, first_group + 1, first_group))
    phase = tl.where(phase < 0, phase + group_size, tl.where(phase >= group_size, phase - group_size, phase))
    return start, first_group, phase.to(tl.int32)


@triton.jit(do_not_specialize=(*_HASH_KEY_ARGS, *_GROUP_INDEX_ARGS, "program_base"))
def _quantize_flat_kernel(x_ptr, payload_ptr, stats_ptr, n_packed, n_bytes, group_size, group_magic, group_rcp_bits,
                          program_base, hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope,
                          vm_top_slope, BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr,
                          GROUP_INDEX: tl.constexpr, HALF: tl.constexpr, MASKED: tl.constexpr):
    """General path, step 2: 2 * HALF consecutive values per program (a multiple of 8: every program starts on a
    byte and a noise pair) as a [HALF, 2] tile; groups may end anywhere, so each value fetches (mn, inv) of its
    group from step 2's scratch."""
    start, first_group, phase = _program_start(program_base, group_size, group_rcp_bits, 2 * HALF)
    local = tl.arange(0, 2 * HALF)  # flat, for wide vector loads; split into pairs for the noise
    # A 64-bit base per program and 32-bit offsets per value: (mn, inv) of the value's group. (One 8-byte load of
    # the pair would need a [values, 2] tile whose layout differs from x's: the conversion costs more.)
    stat_ptrs = (stats_ptr + 2 * first_group) + 2 * group_of(local, phase, group_size, group_magic, GROUP_INDEX)
    if MASKED:
        valid = local < tl.minimum(n_packed - start, 2 * HALF).to(tl.int32)
        x = to_f32_exact(tl.load(x_ptr + start + local, mask=valid, other=0.0))
        mn = tl.load(stat_ptrs, mask=valid, other=0.0)
        inv = tl.load(stat_ptrs + 1, mask=valid, other=0.0)
    else:
        x = to_f32_exact(tl.load(x_ptr + start + local))
        mn = tl.load(stat_ptrs)
        inv = tl.load(stat_ptrs + 1)
    fixed = fixed_point(x, mn, inv, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope, USE_VM)
    noise = pair_noise((start >> 1) + tl.arange(0, HALF), hash_k1, hash_k2)
    codes = round_codes(tl.reshape(fixed, (HALF, 2)), noise, LEVELS_TOP)
    if MASKED:  # padding codes share bytes with real ones
        codes = tl.where(tl.reshape(valid, (HALF, 2)), codes, 0)
    BYTES: tl.constexpr = 2 * HALF * BITS // 8
    packed = tl.reshape(pack_pairs(tl.reshape(codes, (1, HALF, 2)), 1, HALF, BITS), (BYTES,))
    byte_offsets = (program_base + tl.program_id(0)).to(tl.int64) * BYTES + tl.arange(0, BYTES)
    if MASKED:
        tl.store(payload_ptr + byte_offsets, packed, mask=byte_offsets < n_bytes)
    else:
        tl.store(payload_ptr + byte_offsets, packed)


@triton.jit(do_not_specialize=_TILE_ARGS)
def _dequantize_rows_kernel(payload_ptr, mins_ptr, ranges_ptr, out_ptr, n_packed, n_groups, group_size, tile_base,
                            n_chunks, level_step, vm_level_a, vm_level_b, BITS: tl.constexpr, USE_VM: tl.constexpr,
                            ROWS: tl.constexpr, CHUNK: tl.constexpr, MASKED: tl.constexpr):
    """Groups whose codes fill whole bytes, ROWS per program, in n_chunks chunks of CHUNK values: each group's
    minimum and range are loaded once, its bytes as a [ROWS, CHUNK * BITS // 8] tile."""
    groups = (tile_base + tl.program_id(0)).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    group_start = groups * group_size
    PER_BYTE: tl.constexpr = 8 // BITS
    CHUNK_BYTES: tl.constexpr = CHUNK // PER_BYTE
    lane = tl.arange(0, PER_BYTE)
    if MASKED:
        group_valid = groups < n_groups
        group_len = tl.minimum(n_packed - group_start, group_size).to(tl.int32)
        mn = to_f32_exact(tl.load(mins_ptr + groups, mask=group_valid, other=0.0))
        rng = to_f32_exact(tl.load(ranges_ptr + groups, mask=group_valid, other=0.0))
    else:
        mn = to_f32_exact(tl.load(mins_ptr + groups))
        rng = to_f32_exact(tl.load(ranges_ptr + groups))
    for chunk in range(n_chunks):
        byte_cols = chunk * CHUNK_BYTES + tl.arange(0, CHUNK_BYTES)
        byte_ptrs = payload_ptr + (group_start * BITS // 8)[:, None] + byte_cols[None, :]
        cols = chunk * CHUNK + tl.arange(0, CHUNK)[None, :]
        if MASKED:
            valid = group_valid[:, None] & (cols < group_len[:, None])
            byte_valid = group_valid[:, None] & (byte_cols[None, :] < (group_len[:, None] * BITS + 7) // 8)
            byte = tl.load(byte_ptrs, mask=byte_valid, other=0)
        else:
            byte = tl.load(byte_ptrs)
        codes = (byte.to(tl.int32)[:, :, None] >> (lane * BITS)[None, None, :]) & ((1 << BITS) - 1)
        codes = tl.reshape(codes, (ROWS, CHUNK))
        out = _level(codes, level_step, vm_level_a, vm_level_b, USE_VM) * rng[:, None] + mn[:, None]
        out_ptrs = out_ptr + group_start[:, None] + cols
        if MASKED:
            tl.store(out_ptrs, out, mask=valid)
        else:
            tl.store(out_ptrs, out)


@triton.jit
def _level(codes, level_step, vm_level_a, vm_level_b, USE_VM: tl.constexpr):
    """dequant_level_table[codes]: fp32(q * fp32(1 / B)) uniformly, the four VM levels otherwise."""
    if USE_VM:
        return tl.where(codes < 2, tl.where(codes == 0, 0.0, vm_level_a), tl.where(codes == 2, vm_level_b, 1.0))
    else:
        return codes.to(tl.float32) * level_step


@triton.jit(do_not_specialize=(*_GROUP_INDEX_ARGS, "program_base"))
def _dequantize_kernel(payload_ptr, mins_ptr, ranges_ptr, out_ptr, n_packed, n_bytes, group_size, group_magic,
                       group_rcp_bits, program_base, level_step, vm_level_a, vm_level_b, BITS: tl.constexpr,
                       USE_VM: tl.constexpr, GROUP_INDEX: tl.constexpr, BYTES: tl.constexpr, MASKED: tl.constexpr):
    """BYTES payload bytes per program as a [BYTES, 8 // BITS] tile of codes: x_hat = fp32(level(q) * rng) + mn."""
    PER_BYTE: tl.constexpr = 8 // BITS
    start, first_group, phase = _program_start(program_base, group_size, group_rcp_bits, BYTES * PER_BYTE)
    byte_ptrs = payload_ptr + (program_base + tl.program_id(0)).to(tl.int64) * BYTES + tl.arange(0, BYTES)
    local = tl.arange(0, BYTES * PER_BYTE)
    # 64-bit bases per program and 32-bit offsets per value: the value's group.
    groups = group_of(local, phase, group_size, group_magic, GROUP_INDEX)
    mins_base, ranges_base = mins_ptr + first_group, ranges_ptr + first_group
    if MASKED:
        byte = tl.load(byte_ptrs, mask=tl.arange(0, BYTES) < n_bytes - start // PER_BYTE, other=0)
        valid = local < tl.minimum(n_packed - start, BYTES * PER_BYTE).to(tl.int32)
        mn = to_f32_exact(tl.load(mins_base + groups, mask=valid, other=0.0))
        rng = to_f32_exact(tl.load(ranges_base + groups, mask=valid, other=0.0))
    else:
        byte = tl.load(byte_ptrs)
        mn = to_f32_exact(tl.load(mins_base + groups))
        rng = to_f32_exact(tl.load(ranges_base + groups))
    lane = tl.arange(0, PER_BYTE)
    codes = (byte.to(tl.int32)[:, None] >> (lane * BITS)[None, :]) & ((1 << BITS) - 1)
    out = _level(tl.reshape(codes, (BYTES * PER_BYTE,)), level_step, vm_level_a, vm_level_b, USE_VM) * rng + mn
    if MASKED:
        tl.store(out_ptr + start + local, out, mask=valid)
    else:
        tl.store(out_ptr + start + local, out)


# --------------------------------------------------------------------------------------------- mask kernels


@triton.jit
def _round_to(y, DTYPE: tl.constexpr):
    """fp32 -> DTYPE rounding to nearest even, as torch rounds its fp32 intermediates."""
    if DTYPE == tl.bfloat16:
        # Spelled out in integer ops: Triton's interpreter truncates fp32 -> bf16 casts instead of rounding.
        bits = y.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(y != y, (bits >> 16) | 0x40, rounded)  # NaN stays a (quiet) NaN
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return y.to(DTYPE)


@triton.jit
def _mask_tile(BLOCK_BYTES: tl.constexpr):
    """Element offsets [BLOCK_BYTES, 8] of this program's packed bytes, the byte offsets and the bit shifts."""
    byte_offsets = tl.program_id(0).to(tl.int64) * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)
    bit_shifts = tl.arange(0, 8)
    return byte_offsets[:, None] * 8 + bit_shifts[None, :], byte_offsets, bit_shifts


@triton.jit
def _store_mask_bytes(packed_ptr, bits, byte_offsets, bit_shifts, n_bytes):
    packed = tl.sum(bits.to(tl.int32) << bit_shifts[None, :], axis=1).to(tl.uint8)
    tl.store(packed_ptr + byte_offsets, packed, mask=byte_offsets < n_bytes)


@triton.jit
def _pack_mask_kernel(mask_ptr, packed_ptr, n, n_bytes, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    bits = tl.load(mask_ptr + offsets, mask=offsets < n, other=0) != 0
    _store_mask_bytes(packed_ptr, bits, byte_offsets, bit_shifts, n_bytes)


@triton.jit
def _unpack_mask_kernel(packed_ptr, mask_ptr, n, n_bytes, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    byte = tl.load(packed_ptr + byte_offsets, mask=byte_offsets < n_bytes, other=0).to(tl.int32)
    bits = (byte[:, None] >> bit_shifts[None, :]) & 1
    tl.store(mask_ptr + offsets, bits.to(tl.uint8), mask=offsets < n)


@triton.jit
def _relu_pack_kernel(x_ptr, out_ptr, packed_ptr, n, n_bytes, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    valid = offsets < n
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
    # Signs are read from the exact fp32 value: compared as bf16, subnormals count as zero in the interpreter.
    x_f32 = to_f32_exact(x)
    # where(x < 0, 0, x) keeps -0.0 and NaN like torch.relu does.
    tl.store(out_ptr + offsets, tl.where(x_f32 < 0, tl.zeros_like(x), x), mask=valid)
    _store_mask_bytes(packed_ptr, x_f32 > 0, byte_offsets, bit_shifts, n_bytes)


@triton.jit(do_not_specialize=_DROPOUT_SCALAR_ARGS)
def _dropout_kernel(x_ptr, out_ptr, packed_ptr, n, n_bytes, hash_k1, hash_k2, keep_threshold, scale,
                    STORE_MASK: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    valid = offsets < n
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
    keep = (hash_at(offsets, hash_k1, hash_k2) >> 8) >= keep_threshold.to(tl.uint32)
    # where(), not x * keep: a dropped -x or inf must give +0.0, as in the torch backend.
    y = tl.where(keep, to_f32_exact(x) * scale, 0.0)
    tl.store(out_ptr + offsets, _round_to(y, x.dtype), mask=valid)
    if STORE_MASK:
        # Bits past the end must stay 0, as in pack_codes.
        _store_mask_bytes(packed_ptr, keep & valid, byte_offsets, bit_shifts, n_bytes)


@triton.jit
def _masked_scale_kernel(t_ptr, packed_ptr, out_ptr, n, n_bytes, scale, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    valid = offsets < n
    byte = tl.load(packed_ptr + byte_offsets, mask=byte_offsets < n_bytes, other=0).to(tl.int32)
    keep = ((byte[:, None] >> bit_shifts[None, :]) & 1) != 0
    t = tl.load(t_ptr + offsets, mask=valid, other=0.0)
    y = tl.where(keep, to_f32_exact(t) * scale, 0.0)
    tl.store(out_ptr + offsets, _round_to(y, t.dtype), mask=valid)


# --------------------------------------------------------------------------------------------- quantization API


def vm_kernel_args(vm_a: float | None) -> tuple[float, ...]:
    """quant_ref.vm_pieces(vm_a) as kernel scalars; placeholders when VM is off."""
    return (1.0, 2.0, 1.0, 1.0, 1.0) if vm_a is None else tuple(vm_pieces(vm_a))


@lru_cache(maxsize=32)
def inverse_table(bits: int, device: torch.device) -> torch.Tensor:
    """int32 bits of fp32(B * 2^16 / (1 + m / 128)) for the 128 bf16 mantissas m (group_inverse's table), each a
    correctly rounded fp32 division like the reference's."""
    scaled_top = torch.full((128,), float(((1 << bits) - 1) << 16), dtype=torch.float32)
    return (scaled_top / (1 + torch.arange(128, dtype=torch.float32) / 128)).view(torch.int32).to(device)


@dataclass(frozen=True)
class RowTiling:
    """How row-tile kernels cover groups of byte-aligned codes: ``rows`` groups per program, each in ``n_chunks``
    chunks of ``chunk`` values (a power of two). ``exact``: the chunks tile each group exactly, so programs of
    complete groups need no bounds checks."""

    rows: int
    chunk: int
    n_chunks: int

    def exact(self, group_size: int) -> bool:
        return self.chunk * self.n_chunks == group_size


def row_tiling(group_size: int, n_groups: int, bits: int) -> RowTiling:
    """Chunks of the largest power of two dividing the group (at most MAX_GROUP_TILE) when that is at least
    _MIN_EXACT_CHUNK values, else the group padded to a power of two (or to MAX_GROUP_TILE chunks). A chunk holds
    whole bytes of codes; about _TILE_ELEMS values per program."""
    exact_chunk = min(group_size & -group_size, MAX_GROUP_TILE)
    if exact_chunk >= _MIN_EXACT_CHUNK:
        chunk = exact_chunk
    else:
        chunk = max(8 // bits, min(next_pow2(group_size), MAX_GROUP_TILE))
    rows = min(max(1, _TILE_ELEMS // chunk), next_pow2(n_groups))
    return RowTiling(rows, chunk, -(-group_size // chunk))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def _row_unroll(tiling: RowTiling, group_size: int) -> int:
    """Values per step of the one-thread-per-group statistics, or 0 where the row tile reduces its groups itself
    (groups long enough that each thread holds a long stretch of one group)."""
    if tiling.n_chunks > 1 or tiling.chunk > _THREAD_ROW_MAX:
        return 0
    return math.gcd(group_size, 8)


def _row_launches(kernel, tiling: RowTiling, group_size: int, n_full: int, n_groups: int, args: tuple,
                  tail_args: tuple, meta: dict) -> None:
    """Launch a row-tile kernel: unchecked programs over the complete groups when the chunks tile them exactly,
    then checked programs (tile_base = first such tile) for the rest."""
    whole_tiles = n_full // tiling.rows if tiling.exact(group_size) else 0
    warps = _warps(tiling.rows * tiling.chunk) * (2 if tiling.n_chunks > 1 else 1)  # looped: fewer registers
    meta = {"ROWS": tiling.rows, **meta}
    if whole_tiles:
        kernel[(whole_tiles,)](*args, 0, tiling.n_chunks, *tail_args, MASKED=False, num_warps=warps, **meta)
    if whole_tiles * tiling.rows < n_groups:
        # Bounds checks cost registers: half the values per thread keeps the checked variant as lean as the bulk.
        kernel[(triton.cdiv(n_groups - whole_tiles * tiling.rows, tiling.rows),)](
            *args, whole_tiles, tiling.n_chunks, *tail_args, MASKED=True, num_warps=min(8, 2 * warps), **meta)


def group_index_args(group_size: int, values_per_program: int) -> tuple[int, int, int]:
    """(GROUP_INDEX, group_magic, group_rcp_bits) for ``group_of`` and ``_program_start``. The magic
    floor(2^32 / group_size) + 1 travels as int32 (as the keys do) and is exact while (phase + local) * group_size
    < 2^32, which values_per_program <= 2^15 guarantees; group_rcp_bits is fp64(1 / group_size) as int64 bits."""
    rcp_bits = struct.unpack("<q", struct.pack("<d", 1.0 / group_size))[0]
    if group_size == 1:
        return 2, 0, rcp_bits
    if group_size > values_per_program:
        return 1, 0, rcp_bits
    magic = (1 << 32) // group_size + 1
    return 0, magic - (1 << 32) if magic >= 1 << 31 else magic, rcp_bits


def _warps(values_per_program: int) -> int:
    return max(1, min(8, values_per_program // (32 * _VALUES_PER_THREAD)))


def quantize_pack_triton(x: torch.Tensor, bits: int, group_size: int, seed: int, vm_a: float | None = None,
                         fp32_tail: bool = False) -> PackedRef:
    """Triton twin of ``quantize_pack_ref``: the same payload bytes, bf16 mins/ranges and raw tail. fp16/bf16
    inputs are read as they are (the kernels widen them exactly); other dtypes are converted to fp32 first."""
    check_quant_args(bits, group_size, vm_a)
    _require_usable(x)
    flat = x.detach().reshape(-1)
    flat = (flat if flat.dtype in _ELEMENTWISE_DTYPES else flat.to(torch.float32)).contiguous()
    n_full, short, tail_len = split_groups(flat.numel(), group_size, fp32_tail)
    n_packed = n_full * group_size + short
    n_groups = n_full + (short > 0)
    tail = flat[n_packed:].to(torch.float32, copy=True) if tail_len else None
    payload = torch.empty(-(-n_packed * bits // 8), dtype=torch.uint8, device=flat.device)
    mins = torch.empty(n_groups, dtype=torch.bfloat16, device=flat.device)
    ranges = torch.empty(n_groups, dtype=torch.bfloat16, device=flat.device)
    if n_groups == 0:
        return PackedRef(payload, mins, ranges, tail)

    keys = kernel_keys(seed)
    vm_args = vm_kernel_args(vm_a)
    constants = {"BITS": bits, "LEVELS_TOP": (1 << bits) - 1, "USE_VM": vm_a is not None, **_NO_FMA}
    if group_size * bits % 8 == 0 and group_size % 2 == 0:
        tiling = row_tiling(group_size, n_groups, bits)
        _row_launches(_quantize_aligned_kernel, tiling, group_size, n_full, n_groups,
                      (flat, payload, mins, ranges, inverse_table(bits, flat.device), n_packed, n_groups, group_size),
                      (*keys, *vm_args), {"HALF": tiling.chunk // 2, "LOOPED": tiling.n_chunks > 1,
                                          "ROW_UNROLL": _row_unroll(tiling, group_size), **constants})
        return PackedRef(payload, mins, ranges, tail)
    stats = torch.empty(n_groups, 2, dtype=torch.float32, device=flat.device)  # (mn, inv) per group
    stats_tiles = n_full // _STATS_ROWS  # tiles of complete groups: no bounds checks
    stats_args = (flat, mins, ranges, stats, inverse_table(bits, flat.device), n_packed, n_groups, group_size)
    stats_meta = {"ROWS": _STATS_ROWS, "UNROLL": _largest_divisor(group_size, _STATS_UNROLL),
                  "num_warps": _STATS_ROWS // 32, **_NO_FMA}
    if stats_tiles:
        _group_stats_kernel[(stats_tiles,)](*stats_args, 0, MASKED=False, **stats_meta)
    if stats_tiles * _STATS_ROWS < n_groups:
        _group_stats_kernel[(triton.cdiv(n_groups - stats_tiles * _STATS_ROWS, _STATS_ROWS),)](
            *stats_args, stats_tiles, MASKED=True, **stats_meta)
    group_index, *group_consts = group_index_args(group_size, _FLAT_BLOCK)
    _flat_launches(_quantize_flat_kernel, n_packed, _FLAT_BLOCK,
                   (flat, payload, stats, n_packed, payload.numel(), group_size, *group_consts), (*keys, *vm_args),
                   {"GROUP_INDEX": group_index, "HALF": _FLAT_BLOCK // 2, **constants})
    return PackedRef(payload, mins, ranges, tail)


def _flat_launches(kernel, n_values: int, per_program: int, args: tuple, tail_args: tuple, meta: dict) -> None:
    """Launch a flat kernel: unchecked programs over the whole blocks, then one checked program (program_base =
    the number of whole blocks) for a ragged end."""
    whole = n_values // per_program
    warps = _warps(per_program)
    if whole:
        kernel[(whole,)](*args, 0, *tail_args, MASKED=False, num_warps=warps, **meta)
    if whole * per_program < n_values:
        # As in _row_launches: half the values per thread keeps the checked variant's registers down.
        kernel[(1,)](*args, whole, *tail_args, MASKED=True, num_warps=min(8, 2 * warps), **meta)


def unpack_dequantize_triton(payload: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor,
                             tail: torch.Tensor | None, shape: torch.Size | tuple[int, ...], bits: int,
                             group_size: int, vm_a: float | None = None) -> torch.Tensor:
    """Triton twin of ``unpack_dequantize_ref``: x_hat = fp32(level(q) * rng) + mn, the raw tail copied back."""
    numel, n_packed = check_packed_layout(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    _require_usable(payload)
    out = torch.empty(numel, dtype=torch.float32, device=payload.device)
    if n_packed:
        levels = dequant_level_table(bits, vm_a)  # uniform: levels[1] = fp32(1 / B), the kernel's step
        vm_levels = levels[1:3] if vm_a is not None else (0.0, 0.0)
        constants = {"BITS": bits, "USE_VM": vm_a is not None, **_NO_FMA}
        stored = (payload.contiguous(), mins.to(torch.bfloat16).contiguous(), ranges.to(torch.bfloat16).contiguous())
        n_groups = mins.numel()
        if group_size * bits % 8 == 0 and group_size % 2 == 0:  # the quantize kernels' row layout
            tiling = row_tiling(group_size, n_groups, bits)
            _row_launches(_dequantize_rows_kernel, tiling, group_size, n_packed // group_size, n_groups,
                          (*stored, out, n_packed, n_groups, group_size), (levels[1], *vm_levels),
                          {"CHUNK": tiling.chunk, **constants})
            return _with_tail(out, tail, n_packed, shape)
        per_program = _DEQUANT_VALUES * bits // 8  # payload bytes
        group_index, *group_consts = group_index_args(group_size, _DEQUANT_VALUES)
        _flat_launches(_dequantize_kernel, n_packed, _DEQUANT_VALUES,
                       (*stored, out, n_packed, payload.numel(), group_size, *group_consts), (levels[1], *vm_levels),
                       {"GROUP_INDEX": group_index, "BYTES": per_program, **constants})
    return _with_tail(out, tail, n_packed, shape)


def _with_tail(out: torch.Tensor, tail: torch.Tensor | None, n_packed: int,
               shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    if tail is not None:
        out[n_packed:] = tail.to(torch.float32)
    return out.view(tuple(shape))


# --------------------------------------------------------------------------------------------- mask API


def _mask_grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, 8 * _MASK_BLOCK_BYTES),)


def _packed_mask_buffer(n: int, device: torch.device) -> torch.Tensor:
    return torch.empty(-(-n // 8), dtype=torch.uint8, device=device)


def pack_mask_triton(mask: torch.Tensor) -> torch.Tensor:
    """Triton twin of ``pack_mask_ref``: 1 bit per element, row-major, little-endian within bytes."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    _require_usable(mask)
    flat = mask.reshape(-1).contiguous().view(torch.uint8)
    packed = _packed_mask_buffer(flat.numel(), flat.device)
    if flat.numel():
        _pack_mask_kernel[_mask_grid(flat.numel())](flat, packed, flat.numel(), packed.numel(),
                                                    BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return packed


def _check_packed_mask(packed: torch.Tensor, n: int) -> None:
    if packed.dim() != 1 or packed.dtype != torch.uint8:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dim()}-D {packed.dtype}")
    if packed.numel() != -(-n // 8):
        raise ValueError(f"a mask of {n} elements needs {-(-n // 8)} bytes, got {packed.numel()}")


def unpack_mask_triton(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Triton twin of ``unpack_mask_ref``."""
    _require_usable(packed)
    n = math.prod(shape)
    _check_packed_mask(packed, n)
    out = torch.empty(n, dtype=torch.uint8, device=packed.device)
    if n:
        _unpack_mask_kernel[_mask_grid(n)](packed.contiguous(), out, n, packed.numel(), BLOCK_BYTES=_MASK_BLOCK_BYTES,
                                           **_NO_FMA)
    return out.view(torch.bool).view(tuple(shape))


def relu_pack_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x), pack_mask_ref(x > 0)) in one pass."""
    _check_elementwise_dtype(x)
    _require_usable(x)
    flat = x.reshape(-1).contiguous()
    out = torch.empty_like(flat)
    packed = _packed_mask_buffer(flat.numel(), flat.device)
    if flat.numel():
        _relu_pack_kernel[_mask_grid(flat.numel())](flat, out, packed, flat.numel(), packed.numel(),
                                                    BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return out.view(x.shape), packed


def _dropout_args(p: float, seed: int) -> tuple[int, int, int, float]:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    hash_k1, hash_k2 = kernel_keys(seed)
    keep_threshold = math.ceil(p * 2**24)  # the integer form of u >= p used by dropout_mask_ref
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return hash_k1, hash_k2, keep_threshold, scale


def _dropout(x: torch.Tensor, p: float, seed: int, store_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_elementwise_dtype(x)
    _require_usable(x)
    hash_k1, hash_k2, keep_threshold, scale = _dropout_args(p, seed)
    flat = x.reshape(-1).contiguous()
    out = torch.empty_like(flat)
    # Without a stored mask the kernel never touches the buffer; a 1-byte placeholder saves the allocation.
    packed = _packed_mask_buffer(flat.numel() if store_mask else 1, flat.device)
    if flat.numel():
        _dropout_kernel[_mask_grid(flat.numel())](flat, out, packed, flat.numel(), packed.numel(), hash_k1, hash_k2,
                                                  keep_threshold, scale, STORE_MASK=store_mask,
                                                  BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return out.view(x.shape), packed


def dropout_pack_triton(x: torch.Tensor, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(where(keep, x * scale, 0), packed keep mask) with keep = dropout_mask_ref(seed, x.shape, p), scale = 1 / (1 - p)
    (0 when p == 1)."""
    return _dropout(x, p, seed, store_mask=True)


def dropout_apply_triton(t: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """where(keep, t * scale, 0) with the keep mask regenerated from ``seed`` (a backward that stored no mask)."""
    return _dropout(t, p, seed, store_mask=False)[0]


def masked_scale_triton(t: torch.Tensor, packed: torch.Tensor, scale: float) -> torch.Tensor:
    """where(unpack_mask_ref(packed, t.shape), t * scale, 0) (a backward from a stored mask)."""
    _check_elementwise_dtype(t)
    _require_usable(t, packed)
    flat = t.reshape(-1).contiguous()
    _check_packed_mask(packed, flat.numel())
    out = torch.empty_like(flat)
    if flat.numel():
        _masked_scale_kernel[_mask_grid(flat.numel())](flat, packed.contiguous(), out, flat.numel(), packed.numel(),
                                                       float(scale), BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return out.view(t.shape)
