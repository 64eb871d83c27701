"""Triton kernels for the Rademacher projection of ``quant_ref``, fused with the INT-b quantization and packing.

* ``project_rademacher_triton`` mirrors ``project_rademacher_ref`` bit for bit;
* ``project_quantize_pack_triton`` (exact=True) mirrors ``project_quantize_pack_ref`` bit for bit: one kernel reads
  the rows of x, projects them and quantizes and packs the projected values, so neither the N x r projection nor
  the D x r matrix is ever written to global memory;
* ``project_quantize_pack_triton(..., exact=False)`` is the fast path training takes: ``tl.dot`` in IEEE fp32 over
  sign tiles regenerated from their hash words, fused with the same quantization (``dot_supported`` shapes), else
  cuBLAS ``x @ P`` and ``quantize_pack_triton``. It sums in a blocked order, so it equals the reference to fp32
  rounding, not bit for bit (its tests are by tolerance and by unbiasedness over seeds).

The projection signs are regenerated from the counter-based hash (entry (d, j) is negative iff bit (j & 31) of
``hash_uint32(seed, d * ceil(r / 32) + (j >> 5))`` is set). Every output is accumulated sequentially over d with one
fp32 add per step and scaled by one fp32 multiply, as the reference specifies; quantization reuses the device
helpers of ``quant_triton`` (bf16 directed rounding on the bit pattern, the per-group reciprocal, paired 16-bit
rounding noise of the flat offset in the projected tensor). Launches pass ``enable_fp_fusion=False`` so no
multiply-add is contracted into an FMA.

The exact fused kernel works on tiles of whole groups of the flat N x r tensor, so it needs byte-aligned groups of
even length (``fused_supported``: ``group_size * bits % 8 == 0``) of at most ``quant_triton.MAX_GROUP_TILE`` values
and r <= 64 (the signs of one input column are at most two hash words). Other shapes project with
``project_rademacher_triton`` and quantize with ``quantize_pack_triton`` (the projection then does exist in global
memory, once).

On CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before ``import triton``).
"""

from __future__ import annotations

import math

import torch

from sustainml_kernels.quant_ref import (
    PackedRef,
    check_quant_args,
    rademacher_ref,
    round_to_f32,
    sign_words_per_row,
    split_groups,
)
from sustainml_kernels.quant_triton import (
    MAX_GROUP_TILE,
    TRITON_AVAILABLE,
    bf16_exact,
    group_inverse,
    group_range,
    hash_at,
    inverse_table,
    kernel_keys,
    next_pow2,
    quantize_pack_triton,
    quantize_rows,
    tl,
    to_f32_exact,
    triton,
    triton_usable,
    vm_kernel_args,
)

__all__ = [
    "MAX_FUSED_R",
    "TRITON_AVAILABLE",
    "dot_supported",
    "fused_supported",
    "project_quantize_pack_triton",
    "project_rademacher_triton",
]

MAX_FUSED_R = 64  # the signs of one input column for all r outputs come from at most two hash words
_TILE_ELEMS = 2048  # projected values per program: each costs D adds, so tiles are smaller than quant_triton's
_PROJECT_BLOCK = 1024  # projected values per program of the projection-only kernel
_NO_FMA = {"enable_fp_fusion": False}  # the reference adds and multiplies with separate roundings
# Keys vary with every seed: specialising on their values would recompile per seed.
_KEY_ARGS = ("proj_k1", "proj_k2", "hash_k1", "hash_k2")
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_DOT_WIDTHS = (16, 32, 64)  # r of the tl.dot fast path: a power of two wide enough for a dot tile
_DOT_ROWS = 64  # rows of x per program of the tl.dot kernel (at least one group)
_DOT_K = 16  # input columns per dot step


# --------------------------------------------------------------------------------------------- device helpers


@triton.jit
def _project_values(x_ptr, offsets, valid, stride_n, stride_d, D, R, proj_k1, proj_k2, SIGN_WORDS: tl.constexpr):
    """Unscaled projections at flat ``offsets`` of the N x R output, summed as project_rademacher_ref sums them:
    over d in order, acc = acc + (+-x[n, d]) (exact sign flip, one fp32 add). The caller multiplies by the scale.

    SIGN_WORDS (1 or 2, R <= 64) hashes the sign words of input column d once for the whole tile; 0 hashes one
    word per value (any R)."""
    rows = offsets // R
    cols = (offsets - rows * R).to(tl.int32)  # < R <= 2^31; int32 halves the registers of the per-value indices
    row_ptrs = x_ptr + rows * stride_n
    bit = (cols & 31).to(tl.uint32)
    words_per_row = (R + 31) // 32
    acc = tl.zeros(offsets.shape, dtype=tl.float32)  # +0.0: acc can never become -0.0, so +-0 inputs agree
    # Running 64-bit pointer and hash counter: d * stride_d or d * words_per_row in int32 could wrap.
    column_ptrs = row_ptrs
    word_base = tl.full([], 0, tl.int64)
    for _ in range(0, D):
        x = to_f32_exact(tl.load(column_ptrs, mask=valid, other=0.0))
        if SIGN_WORDS == 0:
            word = hash_at(word_base + (cols >> 5), proj_k1, proj_k2)
        else:
            word = hash_at(word_base, proj_k1, proj_k2)
            if SIGN_WORDS == 2:
                word = tl.where(cols >= 32, hash_at(word_base + 1, proj_k1, proj_k2), word)
        negative = ((word >> bit) & 1) != 0
        acc = acc + tl.where(negative, -x, x)
        column_ptrs += stride_d
        word_base += words_per_row
    return acc


# --------------------------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=_KEY_ARGS)
def _project_kernel(x_ptr, out_ptr, n_out, stride_n, stride_d, D, R, scale, proj_k1, proj_k2,
                    SIGN_WORDS: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < n_out
    acc = _project_values(x_ptr, offsets, valid, stride_n, stride_d, D, R, proj_k1, proj_k2, SIGN_WORDS)
    tl.store(out_ptr + offsets, acc * scale, mask=valid)


@triton.jit(do_not_specialize=_KEY_ARGS)
def _project_quantize_kernel(x_ptr, payload_ptr, mins_ptr, ranges_ptr, inverse_table_ptr, n_packed, n_groups,
                             group_size,
                             stride_n, stride_d, D, R, scale, proj_k1, proj_k2, hash_k1, hash_k2,
                             vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                             BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr,
                             SIGN_WORDS: tl.constexpr, ROWS: tl.constexpr, HALF: tl.constexpr):
    """Whole byte-aligned groups of even length of the flat projected tensor as a [ROWS, HALF, 2] tile held in
    registers (the layout of quant_triton's fused path): project, group min/range, codes, bytes."""
    groups = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    group_valid = groups < n_groups
    group_start = groups * group_size
    group_len = tl.minimum(n_packed - group_start, group_size)  # the short last group has its own length
    cols = 2 * tl.arange(0, HALF)[None, :, None] + tl.arange(0, 2)[None, None, :]
    valid = group_valid[:, None, None] & (cols < group_len[:, None, None])
    offsets = group_start[:, None, None] + cols

    y = _project_values(x_ptr, offsets, valid, stride_n, stride_d, D, R, proj_k1, proj_k2, SIGN_WORDS) * scale
    y_or_nan = tl.where(valid, y, float("nan"))  # min / max skip NaN
    mn, rng = group_range(tl.min(tl.min(y_or_nan, axis=2), axis=1), tl.max(tl.max(y_or_nan, axis=2), axis=1))
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)
    inv = group_inverse(rng, inverse_table_ptr)
    quantize_rows(y, valid, payload_ptr, group_start, (group_len * BITS + 7) // 8, group_valid, mn, inv, 0,
                  hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                  BITS, LEVELS_TOP, USE_VM, ROWS, HALF, True)


@triton.jit(do_not_specialize=_KEY_ARGS)
def _project_quantize_dot_kernel(x_ptr, payload_ptr, mins_ptr, ranges_ptr, inverse_table_ptr, n_rows, n_packed,
                                 n_groups, stride_n, stride_d, D, scale, proj_k1, proj_k2, hash_k1, hash_k2,
                                 vm_low_end, vm_mid_end, vm_low_slope, vm_mid_slope, vm_top_slope,
                                 BITS: tl.constexpr, LEVELS_TOP: tl.constexpr, USE_VM: tl.constexpr,
                                 R: tl.constexpr, GROUP_ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_K: tl.constexpr):
    """Fast path: BLOCK_N rows of x @ P by ``tl.dot`` in IEEE fp32 (blocked, so not the reference's summation
    order), the BLOCK_K x R sign tiles of P regenerated from their hash words, then the tile's groups (GROUP_ROWS
    whole rows each, so R * GROUP_ROWS values) quantized and packed as quant_triton's row tiles are."""
    row0 = tl.program_id(0).to(tl.int64) * BLOCK_N
    rows = row0 + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, R)
    words_per_row: tl.constexpr = (R + 31) // 32
    acc = tl.zeros((BLOCK_N, R), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        d = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_n + d[None, :].to(tl.int64) * stride_d,
                    mask=(rows[:, None] < n_rows) & (d[None, :] < D), other=0.0)
        words = hash_at(d.to(tl.int64)[:, None] * words_per_row + (cols >> 5)[None, :], proj_k1, proj_k2)
        signs = tl.where(((words >> (cols & 31).to(tl.uint32)[None, :]) & 1) != 0, -1.0, 1.0)
        acc = tl.dot(to_f32_exact(x), signs, acc, input_precision="ieee")
    GROUPS: tl.constexpr = BLOCK_N // GROUP_ROWS
    HALF: tl.constexpr = GROUP_ROWS * R // 2
    y = tl.reshape(acc * scale, (GROUPS, HALF, 2))
    groups = tl.program_id(0).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
    group_valid = groups < n_groups
    group_start = groups * (GROUP_ROWS * R)
    group_len = tl.minimum(n_packed - group_start, GROUP_ROWS * R).to(tl.int32)
    local = 2 * tl.arange(0, HALF)[None, :, None] + tl.arange(0, 2)[None, None, :]
    valid = group_valid[:, None, None] & (local < group_len[:, None, None])
    y_or_nan = tl.where(valid, y, float("nan"))  # min / max skip NaN
    mn, rng = group_range(tl.min(tl.min(y_or_nan, axis=2), axis=1), tl.max(tl.max(y_or_nan, axis=2), axis=1))
    tl.store(mins_ptr + groups, bf16_exact(mn), mask=group_valid)
    tl.store(ranges_ptr + groups, bf16_exact(rng), mask=group_valid)
    quantize_rows(y, valid, payload_ptr, group_start, (group_len * BITS + 7) // 8, group_valid, mn,
                  group_inverse(rng, inverse_table_ptr), 0, hash_k1, hash_k2, vm_low_end, vm_mid_end, vm_low_slope,
                  vm_mid_slope, vm_top_slope, BITS, LEVELS_TOP, USE_VM, GROUPS, HALF, True)


# --------------------------------------------------------------------------------------------- host API


def _check_input(x2d: torch.Tensor, r: int) -> None:
    if x2d.dim() != 2:
        raise ValueError(f"expected an N x D input, got shape {tuple(x2d.shape)}")
    if x2d.dtype not in _INPUT_DTYPES:
        raise ValueError(f"expected a float16, bfloat16 or float32 input, got {x2d.dtype}")
    if x2d.shape[1] < 1 or isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"projection needs D >= 1 and an integer r >= 1, got D={x2d.shape[1]}, r={r!r}")
    if not triton_usable(x2d.device):
        if not TRITON_AVAILABLE:
            raise ValueError("triton is not installed; use project_quantize_pack_ref / project_rademacher_ref")
        raise ValueError(f"Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 (set before importing triton) "
                         f"for CPU tensors; got a tensor on {x2d.device}")


def _projection_args(x2d: torch.Tensor, seed: int, r: int) -> tuple:
    """(x, stride_n, stride_d, D, R, scale, proj_k1, proj_k2, SIGN_WORDS)."""
    x = x2d.detach()
    k1, k2 = kernel_keys(seed)
    # scale as project_rademacher_ref rounds it
    sign_words = sign_words_per_row(r) if r <= MAX_FUSED_R else 0
    return (x, x.stride(0), x.stride(1), x.shape[1], r, round_to_f32(1.0 / math.sqrt(r)), k1, k2, sign_words)


def project_rademacher_triton(x2d: torch.Tensor, seed: int, r: int) -> torch.Tensor:
    """Triton twin of ``project_rademacher_ref``: the (N, r) fp32 projection, bit for bit (no D x r matrix)."""
    _check_input(x2d, r)
    x, stride_n, stride_d, d, r, scale, k1, k2, sign_words = _projection_args(x2d, seed, r)
    out = torch.empty(x.shape[0], r, dtype=torch.float32, device=x.device)
    if out.numel():
        _project_kernel[(triton.cdiv(out.numel(), _PROJECT_BLOCK),)](
            x, out, out.numel(), stride_n, stride_d, d, r, scale, k1, k2,
            SIGN_WORDS=sign_words, BLOCK=_PROJECT_BLOCK, **_NO_FMA)
    return out


def fused_supported(r: int, bits: int, group_size: int) -> bool:
    """Whether ``project_quantize_pack_triton`` runs as one fused kernel for these arguments."""
    return r <= MAX_FUSED_R and group_size * bits % 8 == 0 and group_size % 2 == 0 and group_size <= MAX_GROUP_TILE


def dot_supported(r: int, group_size: int) -> bool:
    """Whether the fast path runs as one ``tl.dot`` kernel: r a power of two in [16, 64] (a dot tile's width) and
    groups of whole rows, a power of two of them, at most MAX_GROUP_TILE values."""
    group_rows, rem = divmod(group_size, r)
    return r in _DOT_WIDTHS and not rem and group_rows & (group_rows - 1) == 0 and group_size <= MAX_GROUP_TILE


def project_quantize_pack_triton(x2d: torch.Tensor, r: int, proj_seed: int, bits: int, group_size: int, seed: int,
                                 vm_a: float | None = None, fp32_tail: bool = False, *,
                                 exact: bool = True) -> PackedRef:
    """``quantize_pack(x2d @ rademacher_ref(proj_seed, D, r))`` in the packed layout of ``quant_ref``.

    exact=True: the twin of ``project_quantize_pack_ref``, byte for byte (the sequential fp32 sum it specifies).
    exact=False: the fast path, whose projection is a blocked fp32 matmul (as the torch backend's is): a ``tl.dot``
    kernel fused with the quantization where ``dot_supported``, else cuBLAS ``x @ P`` and ``quantize_pack_triton``.
    Its projected values agree with the reference to fp32 rounding, not bit for bit; the layout is the same, so
    either side decodes the other's bytes."""
    check_quant_args(bits, group_size, vm_a)
    _check_input(x2d, r)
    if not exact:
        return _project_quantize_fast(x2d, r, proj_seed, bits, group_size, seed, vm_a, fp32_tail)
    if not fused_supported(r, bits, group_size):
        return quantize_pack_triton(project_rademacher_triton(x2d, proj_seed, r), bits, group_size, seed, vm_a,
                                    fp32_tail)

    x, stride_n, stride_d, d, r, scale, proj_k1, proj_k2, sign_words = _projection_args(x2d, proj_seed, r)
    payload, mins, ranges, n_packed, n_groups = _packed_buffers(x.shape[0] * r, bits, group_size, fp32_tail, x.device)
    tail = None
    if n_packed < x.shape[0] * r:
        # The raw tail is < group_size values at the end: project only the rows it touches (signs depend on (d, j)
        # alone, so a row projects identically wherever it sits).
        first_row = n_packed // r
        tail = project_rademacher_triton(x[first_row:], proj_seed, r).reshape(-1)[n_packed - first_row * r:].clone()
    if n_groups == 0:
        return PackedRef(payload, mins, ranges, tail)

    hash_k1, hash_k2 = kernel_keys(seed)
    block_g = max(8, next_pow2(group_size))  # at least one byte of 1-bit codes per group
    groups_per_prog = min(max(1, _TILE_ELEMS // block_g), next_pow2(n_groups))
    _project_quantize_kernel[(triton.cdiv(n_groups, groups_per_prog),)](
        x, payload, mins, ranges, inverse_table(bits, x.device), n_packed, n_groups, group_size, stride_n, stride_d,
        d, r, scale,
        proj_k1, proj_k2, hash_k1, hash_k2, *vm_kernel_args(vm_a),
        BITS=bits, LEVELS_TOP=(1 << bits) - 1, USE_VM=vm_a is not None, SIGN_WORDS=sign_words,
        ROWS=groups_per_prog, HALF=block_g // 2, num_warps=max(4, groups_per_prog * block_g // 256),
        **_NO_FMA)
    return PackedRef(payload, mins, ranges, tail)


def _packed_buffers(numel: int, bits: int, group_size: int, fp32_tail: bool, device: torch.device) -> tuple:
    """(payload, mins, ranges, values packed, groups) for ``numel`` projected values."""
    n_full, short, _ = split_groups(numel, group_size, fp32_tail)
    n_packed = n_full * group_size + short
    n_groups = n_full + (short > 0)
    payload = torch.empty(-(-n_packed * bits // 8), dtype=torch.uint8, device=device)
    mins = torch.empty(n_groups, dtype=torch.bfloat16, device=device)
    ranges = torch.empty(n_groups, dtype=torch.bfloat16, device=device)
    return payload, mins, ranges, n_packed, n_groups


def _project_quantize_fast(x2d: torch.Tensor, r: int, proj_seed: int, bits: int, group_size: int, seed: int,
                           vm_a: float | None, fp32_tail: bool) -> PackedRef:
    x = x2d.detach()
    n_rows, d = x.shape
    if not dot_supported(r, group_size):
        projection = rademacher_ref(proj_seed, d, r, device=x.device)  # D x r, regenerated from its seed
        return quantize_pack_triton(x.to(torch.float32) @ projection, bits, group_size, seed, vm_a, fp32_tail)
    payload, mins, ranges, n_packed, n_groups = _packed_buffers(n_rows * r, bits, group_size, fp32_tail, x.device)
    tail = None
    if n_packed < n_rows * r:  # fewer rows than a group: raw, projected by the same blocked matmul
        first_row = n_packed // r
        tail = (x[first_row:].to(torch.float32) @ rademacher_ref(proj_seed, d, r, device=x.device)).reshape(-1)
    if n_groups:
        group_rows = group_size // r
        block_n = max(group_rows, _DOT_ROWS)
        proj_k1, proj_k2 = kernel_keys(proj_seed)
        _project_quantize_dot_kernel[(triton.cdiv(n_rows, block_n),)](
            x, payload, mins, ranges, inverse_table(bits, x.device), n_rows, n_packed, n_groups, x.stride(0),
            x.stride(1), d, round_to_f32(1.0 / math.sqrt(r)), proj_k1, proj_k2, *kernel_keys(seed),
            *vm_kernel_args(vm_a), BITS=bits, LEVELS_TOP=(1 << bits) - 1, USE_VM=vm_a is not None, R=r,
            GROUP_ROWS=group_rows, BLOCK_N=block_n, BLOCK_K=_DOT_K, num_warps=8, **_NO_FMA)
    return PackedRef(payload, mins, ranges, tail)
