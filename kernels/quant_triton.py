"""Triton kernels for the packed INT-b activation layout; each mirrors its reference in ``quant_ref.py`` with the
same bit layout, the same random stream and the same fp32 operation order, so payloads, metadata and outputs are
byte-identical to the reference for the same inputs and seeds.

* ``quantize_pack_triton`` / ``unpack_dequantize_triton`` mirror ``quantize_pack_ref`` / ``unpack_dequantize_ref``;
* ``pack_mask_triton`` / ``unpack_mask_triton`` mirror ``pack_mask_ref`` / ``unpack_mask_ref``;
* ``relu_pack_triton``, ``dropout_pack_triton``, ``dropout_apply_triton`` and ``masked_scale_triton`` fuse the
  elementwise op with the 1-bit mask of ``pack_mask_ref``; dropout keeps exactly the elements ``dropout_mask_ref``
  keeps.

Exactness rests on three rules every kernel follows: hashing in uint32 arithmetic (wrapping like the reference's
masked int64 steps), the one division per group (``B * 2^16 / rng``) through ``tl.math.div_rn`` (correctly rounded,
as torch divides), and launches with ``enable_fp_fusion=False`` so that a multiply followed by an add is never
contracted into an FMA. Hash keys travel as int32 (``kernel_keys``), so every keyed kernel compiles once whatever
the seed.

Quantization takes one of three paths, all producing the same layout:

* fused: when a group's codes fill whole bytes (``group_size * bits % 8 == 0``) and a group fits one tile, each
  program quantizes several whole groups held as a [groups, BLOCK_G] tile in registers (stats, codes, bytes);
* looped: byte-aligned groups larger than ``MAX_GROUP_TILE`` get one program per group that walks the group in
  column chunks twice (min/max, then quantize and pack);
* general: for groups that end mid-byte a stats kernel writes the metadata first, then a flat kernel over
  byte-aligned chunks of the tensor gathers each element's group metadata and packs.

On CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before ``import triton``).
"""

from __future__ import annotations

import math
import os
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
_TILE_ELEMS = 4096  # values per program in the fused path (several small groups share one program)
_FLAT_BLOCK = 1024  # values per program in flat kernels; a multiple of 8 so every block starts on a byte
_MASK_BLOCK_BYTES = 128  # packed mask bytes per program (1024 elements)
_ELEMENTWISE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_NO_FMA = {"enable_fp_fusion": False}  # the reference multiplies and adds in two roundings
# Hash keys vary with every seed: specialising on their values would recompile per seed (and turn a key that
# happens to equal 1 into a constexpr without .to()).
_HASH_KEY_ARGS = ("hash_k1", "hash_k2")
_DROPOUT_SCALAR_ARGS = (*_HASH_KEY_ARGS, "keep_threshold")


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
def _group_bounds(x_ptr, group_start, group_len, group_valid, ROWS: tl.constexpr, BLOCK_G: tl.constexpr,
                  NUM_CHUNKS: tl.constexpr):
    """Per-group (mn, rng) exactly as quantize_pack_ref: bf16-down minimum, bf16-up (max - mn)."""
    cols = tl.arange(0, BLOCK_G)
    running_min = tl.full([ROWS, BLOCK_G], float("inf"), tl.float32)
    running_max = tl.full([ROWS, BLOCK_G], float("-inf"), tl.float32)
    for chunk in range(NUM_CHUNKS):
        chunk_cols = chunk * BLOCK_G + cols
        in_group = group_valid[:, None] & (chunk_cols[None, :] < group_len[:, None])
        x = tl.load(x_ptr + group_start[:, None] + chunk_cols[None, :], mask=in_group, other=0.0)
        running_min = tl.minimum(running_min, tl.where(in_group, x, float("inf")))
        running_max = tl.maximum(running_max, tl.where(in_group, x, float("-inf")))
    return group_range(tl.min(running_min, axis=1), tl.max(running_max, axis=1))


@triton.jit
def group_range(group_min, group_max):
    """quant_ref.group_ranges: bf16-down minimum, bf16-up (max - mn) raised to RANGE_FLOOR when positive."""
    mn = round_to_bf16_grid(group_min, False)
    rng = round_to_bf16_grid(group_max - mn, True)
    return mn, tl.where(rng > 0, tl.maximum(rng, _RANGE_FLOOR), rng)


@triton.jit
def group_inverse(rng, LEVELS_TOP: tl.constexpr):
    """quant_ref.group_reciprocal: B * 2^16 / rng (correctly rounded), 0 where rng == 0."""
    has_range = rng > 0
    # A dummy divisor where rng == 0 keeps inf out of the discarded lane.
    return tl.where(has_range, tl.math.div_rn(LEVELS_TOP * 65536.0, tl.where(has_range, rng, 1.0)), 0.0)


@triton.jit
def quantize_codes(x, mn, inv, offsets, hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope,
                   vm_top_slope, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr):
    """int32 codes q = min((trunc(s) + base + noise) >> 16, B) in the reference's operation order."""
    s = (x - mn) * inv
    base = 0
    if USE_VM:
        low = s < vm_low_end
        mid = s < vm_mid_end
        offset = tl.where(low, 0.0, tl.where(mid, vm_low_end, vm_mid_end))
        slope = tl.where(low, vm_low_slope, tl.where(mid, vm_mid_slope, vm_top_slope))
        s = (s - offset) * slope
        base = tl.where(low, 0, tl.where(mid, 65536, 131072))
    h = hash_at(offsets >> 1, hash_k1, hash_k2)
    noise = ((h >> ((offsets & 1) * 16).to(tl.uint32)) & 0xFFFF).to(tl.int32)
    q = (s.to(tl.int32) + base + noise) >> 16
    return tl.minimum(q, LEVELS_TOP)


@triton.jit
def pack_rows(codes, ROWS: tl.constexpr, COLS: tl.constexpr, BITS: tl.constexpr):
    """[ROWS, COLS] codes (< 2^BITS) -> [ROWS, COLS * BITS // 8] bytes, code i at bit (i * BITS) % 8."""
    if BITS == 8:
        return codes.to(tl.uint8)
    PER_BYTE: tl.constexpr = 8 // BITS
    by_byte = tl.reshape(codes, (ROWS, COLS // PER_BYTE, PER_BYTE))
    shifts = tl.arange(0, PER_BYTE) * BITS
    return tl.sum(by_byte << shifts[None, None, :], axis=2).to(tl.uint8)


# --------------------------------------------------------------------------------------------- quantize kernels


@triton.jit(do_not_specialize=_HASH_KEY_ARGS)
def _quantize_aligned_kernel(x_ptr, payload_ptr, mins_ptr, ranges_ptr, n_packed, n_groups, group_size,
                             hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                             BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr,
                             GROUPS_PER_PROG: tl.constexpr, BLOCK_G: tl.constexpr, NUM_CHUNKS: tl.constexpr):
    """Fused (NUM_CHUNKS == 1) or looped path: whole groups whose codes fill whole bytes."""
    groups = tl.program_id(0).to(tl.int64) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)
    group_valid = groups < n_groups
    group_start = groups * group_size
    group_len = tl.minimum(n_packed - group_start, group_size)  # the short last group has its own length
    group_byte_start = group_start * BITS // 8  # exact: group_size * BITS is a multiple of 8
    group_bytes = (group_len * BITS + 7) // 8

    mn, rng = _group_bounds(x_ptr, group_start, group_len, group_valid, GROUPS_PER_PROG, BLOCK_G, NUM_CHUNKS)
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)
    inv = group_inverse(rng, LEVELS_TOP)

    cols = tl.arange(0, BLOCK_G)
    byte_cols = tl.arange(0, BLOCK_G * BITS // 8)
    # With one chunk the loads below hit the lines _group_bounds just read; with several this is the second pass.
    for chunk in range(NUM_CHUNKS):
        chunk_cols = chunk * BLOCK_G + cols
        in_group = group_valid[:, None] & (chunk_cols[None, :] < group_len[:, None])
        offsets = group_start[:, None] + chunk_cols[None, :]
        x = tl.load(x_ptr + offsets, mask=in_group, other=0.0)
        codes = quantize_codes(x, mn[:, None], inv[:, None], offsets, hash_k1, hash_k2, vm_low_end, vm_mid_end,
                               vm_low_slope, vm_mid_slope, vm_top_slope, LEVELS_TOP, USE_VM)
        # Padding codes must be 0: they share the last byte of a short group with real codes.
        packed = pack_rows(tl.where(in_group, codes, 0), GROUPS_PER_PROG, BLOCK_G, BITS)
        chunk_byte_cols = chunk * (BLOCK_G * BITS // 8) + byte_cols
        byte_mask = group_valid[:, None] & (chunk_byte_cols[None, :] < group_bytes[:, None])
        tl.store(payload_ptr + group_byte_start[:, None] + chunk_byte_cols[None, :], packed, mask=byte_mask)


@triton.jit
def _group_stats_kernel(x_ptr, mins_ptr, ranges_ptr, n_packed, n_groups, group_size,
                        GROUPS_PER_PROG: tl.constexpr, BLOCK_G: tl.constexpr, NUM_CHUNKS: tl.constexpr):
    """General path, step 1: mins and ranges of every group (any group size)."""
    groups = tl.program_id(0).to(tl.int64) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)
    group_valid = groups < n_groups
    group_start = groups * group_size
    group_len = tl.minimum(n_packed - group_start, group_size)
    mn, rng = _group_bounds(x_ptr, group_start, group_len, group_valid, GROUPS_PER_PROG, BLOCK_G, NUM_CHUNKS)
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)


@triton.jit(do_not_specialize=_HASH_KEY_ARGS)
def _quantize_flat_kernel(x_ptr, payload_ptr, mins_ptr, ranges_ptr, n_packed, group_size,
                          hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                          BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr, BLOCK: tl.constexpr):
    """General path, step 2: byte-aligned blocks of the flat tensor; groups may end mid-byte."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < n_packed
    groups = offsets // group_size
    mn = to_f32_exact(tl.load(mins_ptr + groups, mask=valid, other=0.0))
    rng = to_f32_exact(tl.load(ranges_ptr + groups, mask=valid, other=0.0))
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
    codes = quantize_codes(x, mn, group_inverse(rng, LEVELS_TOP), offsets, hash_k1, hash_k2, vm_low_end, vm_mid_end,
                           vm_low_slope, vm_mid_slope, vm_top_slope, LEVELS_TOP, USE_VM)
    packed = tl.reshape(pack_rows(tl.reshape(tl.where(valid, codes, 0), (1, BLOCK)), 1, BLOCK, BITS),
                        (BLOCK * BITS // 8,))
    byte_offsets = tl.program_id(0).to(tl.int64) * (BLOCK * BITS // 8) + tl.arange(0, BLOCK * BITS // 8)
    tl.store(payload_ptr + byte_offsets, packed, mask=byte_offsets < (n_packed * BITS + 7) // 8)


@triton.jit
def _dequantize_kernel(payload_ptr, mins_ptr, ranges_ptr, table_ptr, out_ptr, n_packed, group_size,
                       BITS: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < n_packed
    bit_pos = offsets * BITS
    byte = tl.load(payload_ptr + (bit_pos >> 3), mask=valid, other=0).to(tl.int32)
    codes = (byte >> (bit_pos & 7).to(tl.int32)) & ((1 << BITS) - 1)
    level = tl.load(table_ptr + codes, mask=valid, other=0.0)
    groups = offsets // group_size
    mn = to_f32_exact(tl.load(mins_ptr + groups, mask=valid, other=0.0))
    rng = to_f32_exact(tl.load(ranges_ptr + groups, mask=valid, other=0.0))
    tl.store(out_ptr + offsets, level * rng + mn, mask=valid)


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
def _store_mask_bytes(packed_ptr, bits, byte_offsets, bit_shifts, n):
    packed = tl.sum(bits.to(tl.int32) << bit_shifts[None, :], axis=1).to(tl.uint8)
    tl.store(packed_ptr + byte_offsets, packed, mask=byte_offsets < (n + 7) // 8)


@triton.jit
def _pack_mask_kernel(mask_ptr, packed_ptr, n, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    bits = tl.load(mask_ptr + offsets, mask=offsets < n, other=0) != 0
    _store_mask_bytes(packed_ptr, bits, byte_offsets, bit_shifts, n)


@triton.jit
def _unpack_mask_kernel(packed_ptr, mask_ptr, n, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    byte = tl.load(packed_ptr + byte_offsets, mask=byte_offsets < (n + 7) // 8, other=0).to(tl.int32)
    bits = (byte[:, None] >> bit_shifts[None, :]) & 1
    tl.store(mask_ptr + offsets, bits.to(tl.uint8), mask=offsets < n)


@triton.jit
def _relu_pack_kernel(x_ptr, out_ptr, packed_ptr, n, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    valid = offsets < n
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
    # Signs are read from the exact fp32 value: compared as bf16, subnormals count as zero in the interpreter.
    x_f32 = to_f32_exact(x)
    # where(x < 0, 0, x) keeps -0.0 and NaN like torch.relu does.
    tl.store(out_ptr + offsets, tl.where(x_f32 < 0, tl.zeros_like(x), x), mask=valid)
    _store_mask_bytes(packed_ptr, x_f32 > 0, byte_offsets, bit_shifts, n)


@triton.jit(do_not_specialize=_DROPOUT_SCALAR_ARGS)
def _dropout_kernel(x_ptr, out_ptr, packed_ptr, n, hash_k1, hash_k2, keep_threshold, scale,
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
        _store_mask_bytes(packed_ptr, keep & valid, byte_offsets, bit_shifts, n)


@triton.jit
def _masked_scale_kernel(t_ptr, packed_ptr, out_ptr, n, scale, BLOCK_BYTES: tl.constexpr):
    offsets, byte_offsets, bit_shifts = _mask_tile(BLOCK_BYTES)
    valid = offsets < n
    byte = tl.load(packed_ptr + byte_offsets, mask=byte_offsets < (n + 7) // 8, other=0).to(tl.int32)
    keep = ((byte[:, None] >> bit_shifts[None, :]) & 1) != 0
    t = tl.load(t_ptr + offsets, mask=valid, other=0.0)
    y = tl.where(keep, to_f32_exact(t) * scale, 0.0)
    tl.store(out_ptr + offsets, _round_to(y, t.dtype), mask=valid)


# --------------------------------------------------------------------------------------------- quantization API


def vm_kernel_args(vm_a: float | None) -> tuple[float, ...]:
    """quant_ref.vm_pieces(vm_a) as kernel scalars; placeholders when VM is off."""
    return (1.0, 2.0, 1.0, 1.0, 1.0) if vm_a is None else tuple(vm_pieces(vm_a))


def _group_tiling(group_size: int, n_groups: int) -> tuple[int, int, int]:
    """(groups per program, BLOCK_G, column chunks per group)."""
    if group_size > MAX_GROUP_TILE:
        return 1, MAX_GROUP_TILE, -(-group_size // MAX_GROUP_TILE)
    block_g = max(8, next_pow2(group_size))  # at least one byte of 1-bit codes per row
    groups_per_prog = min(max(1, _TILE_ELEMS // block_g), next_pow2(n_groups))
    return groups_per_prog, block_g, 1


def quantize_pack_triton(x: torch.Tensor, bits: int, group_size: int, seed: int, vm_a: float | None = None,
                         fp32_tail: bool = False) -> PackedRef:
    """Triton twin of ``quantize_pack_ref``: the same payload bytes, bf16 mins/ranges and raw tail."""
    check_quant_args(bits, group_size, vm_a)
    _require_usable(x)
    flat = x.detach().reshape(-1).to(torch.float32).contiguous()
    n_full, short, tail_len = split_groups(flat.numel(), group_size, fp32_tail)
    n_packed = n_full * group_size + short
    n_groups = n_full + (short > 0)
    tail = flat[n_packed:].clone() if tail_len else None
    payload = torch.empty(-(-n_packed * bits // 8), dtype=torch.uint8, device=flat.device)
    mins = torch.empty(n_groups, dtype=torch.bfloat16, device=flat.device)
    ranges = torch.empty(n_groups, dtype=torch.bfloat16, device=flat.device)
    if n_groups == 0:
        return PackedRef(payload, mins, ranges, tail)

    hash_k1, hash_k2 = kernel_keys(seed)
    vm_args = vm_kernel_args(vm_a)
    levels_top = (1 << bits) - 1
    groups_per_prog, block_g, num_chunks = _group_tiling(group_size, n_groups)
    group_grid = (triton.cdiv(n_groups, groups_per_prog),)
    if group_size * bits % 8 == 0:
        _quantize_aligned_kernel[group_grid](
            flat, payload, mins, ranges, n_packed, n_groups, group_size, hash_k1, hash_k2,
            *vm_args, BITS=bits, LEVELS_TOP=levels_top, USE_VM=vm_a is not None,
            GROUPS_PER_PROG=groups_per_prog, BLOCK_G=block_g, NUM_CHUNKS=num_chunks, **_NO_FMA)
    else:
        _group_stats_kernel[group_grid](flat, mins, ranges, n_packed, n_groups, group_size,
                                        GROUPS_PER_PROG=groups_per_prog, BLOCK_G=block_g, NUM_CHUNKS=num_chunks,
                                        **_NO_FMA)
        _quantize_flat_kernel[(triton.cdiv(n_packed, _FLAT_BLOCK),)](
            flat, payload, mins, ranges, n_packed, group_size, hash_k1, hash_k2,
            *vm_args, BITS=bits, LEVELS_TOP=levels_top, USE_VM=vm_a is not None,
            BLOCK=_FLAT_BLOCK, **_NO_FMA)
    return PackedRef(payload, mins, ranges, tail)


def unpack_dequantize_triton(payload: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor,
                             tail: torch.Tensor | None, shape: torch.Size | tuple[int, ...], bits: int,
                             group_size: int, vm_a: float | None = None) -> torch.Tensor:
    """Triton twin of ``unpack_dequantize_ref``: x_hat = table[q] * rng + mn in fp32, the raw tail copied back."""
    numel, n_packed = check_packed_layout(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    _require_usable(payload)
    out = torch.empty(numel, dtype=torch.float32, device=payload.device)
    if n_packed:
        table = torch.tensor(dequant_level_table(bits, vm_a), dtype=torch.float32, device=payload.device)
        _dequantize_kernel[(triton.cdiv(n_packed, _FLAT_BLOCK),)](
            payload.contiguous(), mins.to(torch.bfloat16).contiguous(), ranges.to(torch.bfloat16).contiguous(),
            table, out, n_packed, group_size, BITS=bits, BLOCK=_FLAT_BLOCK, **_NO_FMA)
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
        _pack_mask_kernel[_mask_grid(flat.numel())](flat, packed, flat.numel(), BLOCK_BYTES=_MASK_BLOCK_BYTES,
                                                    **_NO_FMA)
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
        _unpack_mask_kernel[_mask_grid(n)](packed.contiguous(), out, n, BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return out.view(torch.bool).view(tuple(shape))


def relu_pack_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x), pack_mask_ref(x > 0)) in one pass."""
    _check_elementwise_dtype(x)
    _require_usable(x)
    flat = x.reshape(-1).contiguous()
    out = torch.empty_like(flat)
    packed = _packed_mask_buffer(flat.numel(), flat.device)
    if flat.numel():
        _relu_pack_kernel[_mask_grid(flat.numel())](flat, out, packed, flat.numel(), BLOCK_BYTES=_MASK_BLOCK_BYTES,
                                                    **_NO_FMA)
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
        _dropout_kernel[_mask_grid(flat.numel())](flat, out, packed, flat.numel(), hash_k1, hash_k2, keep_threshold,
                                                  scale, STORE_MASK=store_mask, BLOCK_BYTES=_MASK_BLOCK_BYTES,
                                                  **_NO_FMA)
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
        _masked_scale_kernel[_mask_grid(flat.numel())](flat, packed.contiguous(), out, flat.numel(), float(scale),
                                                       BLOCK_BYTES=_MASK_BLOCK_BYTES, **_NO_FMA)
    return out.view(t.shape)
