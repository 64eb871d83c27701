"""The torch backend compiled: ``torch.compile`` (inductor) turns the packed layout's torch code into fused C++
loops on CPU, so a tensor is read once per primitive instead of once per elementwise step of the eager reference.

The compiled functions compose ``sustainml_kernels.quant_ref``'s own steps (``group_ranges``, ``group_reciprocal``,
``_codes``, ``_hash_chunk``, ``dequant_level_table``, ``_keep_scaled``) over [groups, group_size] views and write the
bytes of the eager reference: inductor compiles without FMA contraction or fast-math by default, and
``backend._self_check`` plus the tests compare every primitive byte for byte. Lengths are compiled dynamic
(``maybe_mark_dynamic``) and everything else static, so a run compiles each primitive once per block shape. What the
loops do not cover - a group that does not end on a byte boundary, a mask whose length is not a multiple of 8, a
short last group - runs the eager reference steps.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from sustainml_exp.compress.backend import (
    Backend,
    _dropout_apply_torch,
    _dropout_pack_torch,
    _keep_scaled,
    _masked_scale_torch,
    _relu_pack_torch,
    dropout_scale,
)
from sustainml_kernels import quant_ref as ref

__all__ = ["COMPILED_BACKEND_NAME", "COMPILED_BACKEND"]

COMPILED_BACKEND_NAME = "torch-compiled"
_WORD_BITS = 32  # packed codes are built as int32 words (bytes in host order: little-endian only)


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    # The hash is ~40 integer ops per element; by default inductor would write such an expression to memory (here
    # as int64) before a reduction reads it, instead of fusing it into the loop that packs it.
    compiled = torch.compile(fn, fullgraph=True, dynamic=None, options={"realize_opcount_threshold": 1000})

    def call(*args: Any) -> Any:
        for arg in args:  # lengths vary from call to call; one compiled variant serves them all
            if isinstance(arg, torch.Tensor) and arg.dim() > 0:
                torch._dynamo.maybe_mark_dynamic(arg, 0)
        # Every other int (bits, group size) stays a compile-time constant: a symbolic one would cost the
        # vectorised loops. A run uses a handful of variants; the tests use more than the default limit of 8.
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False, recompile_limit=64):
            return compiled(*args)

    call.__name__ = call.__qualname__ = f"compiled_{fn.__name__}"
    return call


def _keys(seed: int, device: torch.device) -> torch.Tensor:
    # A tensor, not two ints: the keys change every step, and a compiled function specialises on int arguments.
    return torch.tensor(ref.hash_keys(seed), dtype=torch.int64, device=device)


def _noise(keys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """quant_ref.rounding_noise of the elements ``idx``, written per element so that it fuses into its consumer."""
    h = ref._hash_chunk((keys[0], keys[1]), idx >> 1)
    return (h >> ((idx & 1) << 4)) & 0xFFFF


def _word_shifts(bits: int, device: torch.device) -> torch.Tensor:
    return torch.arange(0, _WORD_BITS, bits, dtype=torch.int32, device=device)


def _pack_words(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 words of the codes along the last dimension (``_WORD_BITS // bits`` long; code k at bits k * bits): on a
    little-endian host their bytes are quant_ref.pack_codes of the codes. A sum over a word rather than a byte:
    inductor fuses the codes' computation into it and vectorises a 16-lane reduction, not a 4-lane one."""
    return (codes.to(torch.int32) << _word_shifts(bits, codes.device)).sum(dim=-1, dtype=torch.int32)


def _unpack_words(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of ``_pack_words``: int32 codes with a last dimension of ``_WORD_BITS // bits``."""
    return (words.unsqueeze(-1) >> _word_shifts(bits, words.device)) & ((1 << bits) - 1)


def _as_words(payload: torch.Tensor) -> torch.Tensor | None:
    """``payload`` (uint8) viewed as int32 words, or None where it cannot be (length, alignment, byte order)."""
    if sys.byteorder != "little" or payload.numel() % 4 or payload.storage_offset() % 4:
        return None
    return payload.view(torch.int32)


# --------------------------------------------------------------------------------------------- quantization


def _quantize_groups(groups: torch.Tensor, keys: torch.Tensor, start: int, bits: int,
                     vm: ref.VmPieces | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, fp32 mins, fp32 ranges) of one group per index of the first dimension of ``groups`` (the rest hold
    the group's values in order), the first value at flat offset ``start``, with quant_ref.quantize_pack_ref's
    arithmetic."""
    within = tuple(range(1, groups.dim()))
    mins, ranges = ref.group_ranges(groups.amin(dim=within), groups.amax(dim=within))
    inv = ref.group_reciprocal(ranges, bits)
    per_group = (-1,) + (1,) * len(within)
    s = (groups - mins.view(per_group)) * inv.view(per_group)
    idx = torch.arange(start, start + groups.numel(), dtype=torch.int64, device=groups.device).view(groups.shape)
    return ref._codes(s, _noise(keys, idx), bits, vm), mins, ranges


def _quantize_full_groups(groups: torch.Tensor, keys: torch.Tensor, bits: int,
                          vm: ref.VmPieces | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int32 words, fp32 mins, fp32 ranges) of [groups, words per group, codes per word] values."""
    codes, mins, ranges = _quantize_groups(groups, keys, 0, bits, vm)
    return _pack_words(codes, bits).view(-1), mins, ranges


_quantize_full_groups_compiled = _compile(_quantize_full_groups)


def quantize_pack_compiled(x: torch.Tensor, bits: int, group_size: int, seed: int, vm_a: float | None = None,
                           fp32_tail: bool = False) -> ref.PackedRef:
    """quant_ref.quantize_pack_ref, compiled."""
    ref.check_quant_args(bits, group_size, vm_a)
    flat = x.detach().reshape(-1).to(torch.float32)
    n_full, short, tail_len = ref.split_groups(flat.numel(), group_size, fp32_tail)
    if n_full == 0 or (group_size * bits) % _WORD_BITS or sys.byteorder != "little":
        return ref.quantize_pack_ref(x, bits, group_size, seed, vm_a, fp32_tail)
    keys = _keys(seed, flat.device)
    vm = None if vm_a is None else ref.vm_pieces(vm_a)
    full = n_full * group_size
    per_word = _WORD_BITS // bits
    words, mins, ranges = _quantize_full_groups_compiled(flat[:full].view(n_full, group_size // per_word, per_word),
                                                         keys, bits, vm)
    payload = words.view(torch.uint8)
    if short:  # at most one group, and it starts on a byte boundary: the eager steps, appended
        codes, short_min, short_range = _quantize_groups(flat[full:full + short].view(1, short), keys, full, bits,
                                                         vm)
        payload = torch.cat([payload, ref._pack(codes.view(-1), bits)])
        mins, ranges = torch.cat([mins, short_min]), torch.cat([ranges, short_range])
    tail = flat[full:].clone() if tail_len else None
    return ref.PackedRef(payload, mins.to(torch.bfloat16), ranges.to(torch.bfloat16), tail)


def _dequantize_groups(words: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor, levels: torch.Tensor,
                       bits: int) -> torch.Tensor:
    """fp32 [groups, words per group, codes per word] values of the full groups packed in [groups, words per group]
    ``words``, decoded as quant_ref.unpack_dequantize_ref does (``levels``: its dequant_level_table)."""
    codes = _unpack_words(words, bits)
    return levels[codes.to(torch.int64)] * ranges.to(torch.float32)[:, None, None] + mins.to(torch.float32)[:, None,
                                                                                                              None]


_dequantize_groups_compiled = _compile(_dequantize_groups)


def unpack_dequantize_compiled(payload: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor,
                               tail: torch.Tensor | None, shape: torch.Size | tuple[int, ...], bits: int,
                               group_size: int, vm_a: float | None = None) -> torch.Tensor:
    """quant_ref.unpack_dequantize_ref, compiled."""
    numel, n_packed = ref.check_packed_layout(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    n_full = n_packed // group_size
    full_bytes = n_full * group_size * bits // 8
    words = _as_words(payload[:full_bytes]) if n_full and (group_size * bits) % _WORD_BITS == 0 else None
    if words is None:
        return ref.unpack_dequantize_ref(payload, mins, ranges, tail, shape, bits, group_size, vm_a)
    levels = torch.tensor(ref.dequant_level_table(bits, vm_a), dtype=torch.float32, device=payload.device)
    out = _dequantize_groups_compiled(words.view(n_full, -1), mins[:n_full], ranges[:n_full], levels, bits).view(-1)
    if n_full * group_size < numel:  # a short group (eager reference steps) or the fp32 tail
        rest = ref.unpack_dequantize_ref(payload[full_bytes:], mins[n_full:], ranges[n_full:], tail,
                                         (numel - n_full * group_size,), bits, group_size, vm_a)
        out = torch.cat([out, rest])
    return out.view(tuple(shape))


# --------------------------------------------------------------------------------------------- masks


def _relu_pack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.relu(x), _pack_words(x > 0, 1)


def _dropout_keep(keys: torch.Tensor, threshold: torch.Tensor, shape: torch.Size, device: torch.device
                  ) -> torch.Tensor:
    """quant_ref.dropout_mask_ref: keep element i iff (hash(i) >> 8) >= threshold."""
    idx = torch.arange(shape.numel(), dtype=torch.int64, device=device).view(shape)
    return (ref._hash_chunk((keys[0], keys[1]), idx) >> 8) >= threshold


def _dropout_pack(x: torch.Tensor, keys: torch.Tensor, threshold: torch.Tensor,
                  scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = _dropout_keep(keys, threshold, x.shape, x.device)
    return _keep_scaled(x, keep, scale), _pack_words(keep, 1)


def _dropout_apply(t: torch.Tensor, keys: torch.Tensor, threshold: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _keep_scaled(t, _dropout_keep(keys, threshold, t.shape, t.device), scale)


def _masked_scale(t: torch.Tensor, words: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _keep_scaled(t, _unpack_words(words, 1) == 1, scale)


_relu_pack_compiled = _compile(_relu_pack)
_dropout_pack_compiled = _compile(_dropout_pack)
_dropout_apply_compiled = _compile(_dropout_apply)
_masked_scale_compiled = _compile(_masked_scale)


def _mask_rows(t: torch.Tensor) -> torch.Tensor | None:
    """``t`` as [n / 32, 32] rows (one packed int32 word each), or None where the compiled mask loops do not apply
    (a length that is not a multiple of 32, a non-contiguous tensor, a big-endian host)."""
    if t.numel() == 0 or t.numel() % _WORD_BITS or not t.is_contiguous() or sys.byteorder != "little":
        return None
    return t.view(-1, _WORD_BITS)


def _scale_tensor(scale: float, device: torch.device) -> torch.Tensor:
    # fp32, as eager multiplies an fp32 tensor by a Python float; a tensor so that a new p does not recompile.
    return torch.tensor(scale, dtype=torch.float32, device=device)


def _dropout_constants(p: float, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    threshold = torch.tensor(math.ceil(p * 2**24), dtype=torch.int64, device=device)  # as dropout_mask_ref
    return _keys(seed, device), threshold, _scale_tensor(dropout_scale(p), device)


def relu_pack_compiled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = _mask_rows(x)
    if rows is None:
        return _relu_pack_torch(x)
    out, words = _relu_pack_compiled(rows)
    return out.view(x.shape), words.view(torch.uint8)


def dropout_pack_compiled(x: torch.Tensor, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = _mask_rows(x)
    if rows is None:
        return _dropout_pack_torch(x, p, seed)
    out, words = _dropout_pack_compiled(rows, *_dropout_constants(p, seed, x.device))
    return out.view(x.shape), words.view(torch.uint8)


def dropout_apply_compiled(t: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    rows = _mask_rows(t)
    if rows is None:
        return _dropout_apply_torch(t, p, seed)
    return _dropout_apply_compiled(rows, *_dropout_constants(p, seed, t.device)).view(t.shape)


def masked_scale_compiled(t: torch.Tensor, packed: torch.Tensor, scale: float) -> torch.Tensor:
    rows, words = _mask_rows(t), _as_words(packed)
    if rows is None or words is None:
        return _masked_scale_torch(t, packed, scale)
    return _masked_scale_compiled(rows, words, _scale_tensor(scale, t.device)).view(t.shape)


COMPILED_BACKEND = Backend(
    name=COMPILED_BACKEND_NAME,
    quantize_pack=quantize_pack_compiled,
    unpack_dequantize=unpack_dequantize_compiled,
    pack_mask=ref.pack_mask_ref,
    unpack_mask=ref.unpack_mask_ref,
    relu_pack=relu_pack_compiled,
    dropout_pack=dropout_pack_compiled,
    dropout_apply=dropout_apply_compiled,
    masked_scale=masked_scale_compiled,
    project_quantize_pack=None,
)
