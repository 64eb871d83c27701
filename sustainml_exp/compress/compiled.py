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
    # Likewise for values read by several loops (BatchNorm's output by the activation and both masks): recomputed,
    # not stored in a temporary of the activation's size.
    compiled = torch.compile(fn, fullgraph=True, dynamic=None,
                             options={"realize_opcount_threshold": 1000, "realize_reads_threshold": 1000})

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


def _levels(codes: torch.Tensor, levels: torch.Tensor, uniform: bool) -> torch.Tensor:
    """``levels[codes]`` (quant_ref.dequant_level_table) without a gather, which would not vectorise: uniform levels
    are fp32(c * fp32(1 / B)), i.e. one fp32 multiply of the code by levels[1]; VM's four (2-bit codes, level(0) =
    0) as a sum of indicator products, exact since all but one term are +0. Nested selections give the same bytes
    but run about 4x slower inside the fused BatchNorm backward."""
    if uniform:
        return codes.to(torch.float32) * levels[1]
    return ((codes == 1).to(torch.float32) * levels[1] + (codes == 2).to(torch.float32) * levels[2]
            + (codes == 3).to(torch.float32) * levels[3])


def _dequantize_groups(words: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor, levels: torch.Tensor,
                       bits: int, uniform: bool) -> torch.Tensor:
    """fp32 [groups, words per group, codes per word] values of the full groups packed in [groups, words per group]
    ``words``, decoded as quant_ref.unpack_dequantize_ref does (``levels``: its dequant_level_table)."""
    level = _levels(_unpack_words(words, bits), levels, uniform)
    return level * ranges.to(torch.float32)[:, None, None] + mins.to(torch.float32)[:, None, None]


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
    out = _dequantize_groups_compiled(words.view(n_full, -1), mins[:n_full], ranges[:n_full], levels, bits,
                                      vm_a is None).view(-1)
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


# --------------------------------------------------------------------------------------------- fused activation
# activation.activation_forward / activation_backward in one and two passes. Layout: an N x D activation viewed as
# [rows, D / 32, 32], so that each trailing 32 values are one int32 word of a 1-bit mask and `bits` words of codes.


def _activation_forward(y: torch.Tensor, bn: tuple[torch.Tensor, ...] | None, keys: torch.Tensor | None,
                        threshold: torch.Tensor | None, scale: torch.Tensor | None,
                        store_keep: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dropout(relu(bn(y))), ReLU mask words, dropout mask words). Not in place: overwriting y would make inductor
    keep bn(y) in a temporary of y's size for the mask loops."""
    from sustainml_exp.compress.activation import bn_apply

    normed = y if bn is None else bn_apply(y, *bn)
    out = torch.relu(normed)
    keep_words = None
    if keys is not None:
        keep = _dropout_keep(keys, threshold, y.shape, y.device)
        out = _keep_scaled(out, keep, scale)
        keep_words = _pack_words(keep, 1) if store_keep else None
    return out, _pack_words(normed > 0, 1), keep_words


_activation_forward_compiled = _compile(_activation_forward)


def _word_layout(t: torch.Tensor) -> torch.Tensor | None:
    """An N x D tensor as [N, D / 32, 32], or None where the fused loops do not apply."""
    if t.dim() != 2 or t.shape[1] % _WORD_BITS or not t.is_contiguous() or sys.byteorder != "little":
        return None
    return t.view(t.shape[0], -1, _WORD_BITS)


def _column_view(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, _WORD_BITS)


def activation_forward_fused(y: torch.Tensor, bn: Any, p: float, seed: int, lean: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """activation.activation_forward in one pass, or None where the fused loop does not apply."""
    y3 = _word_layout(y)
    if y3 is None or y.numel() == 0:
        return None
    bn_args = None if bn is None else tuple(_column_view(v) for v in (bn.mean, bn.invstd, bn.weight, bn.bias))
    keys = threshold = scale = None
    if p > 0:
        keys, threshold, scale = _dropout_constants(p, seed, y.device)
    out, relu_words, keep_words = _activation_forward_compiled(y3, bn_args, keys, threshold, scale, not lean)
    keep_mask = None if keep_words is None else keep_words.view(torch.uint8).view(-1)
    return out.view(y.shape), relu_words.view(torch.uint8).view(-1), keep_mask


def _mask_grad(g: torch.Tensor, relu_words: torch.Tensor, keep_words: torch.Tensor | None, keys: torch.Tensor | None,
               threshold: torch.Tensor | None, offset: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    """The gradient through dropout and ReLU: g where both masks keep the value (times the dropout scale), else 0."""
    keep = _unpack_words(relu_words, 1) == 1
    if keep_words is not None:
        keep = keep & (_unpack_words(keep_words, 1) == 1)
    elif keys is not None:  # lean: the dropout mask is regenerated from its seed, at the rows' flat offsets
        idx = offset + torch.arange(g.numel(), dtype=torch.int64, device=g.device).view(g.shape)
        keep = keep & ((ref._hash_chunk((keys[0], keys[1]), idx) >> 8) >= threshold)
    return _keep_scaled(g, keep, scale) if scale is not None else torch.where(keep, g, torch.zeros_like(g))


def _decode_rows(words: torch.Tensor, mins: torch.Tensor, ranges: torch.Tensor, levels: torch.Tensor, bits: int,
                 uniform: bool) -> torch.Tensor:
    """[groups, rows, D / 32, 32] values from [groups, rows, D / 32, bits] code words (whole-row groups)."""
    codes = _unpack_words(words, bits).flatten(-2)
    return (_levels(codes, levels, uniform) * ranges.to(torch.float32)[:, None, None, None]
            + mins.to(torch.float32)[:, None, None, None])


def _activation_backward_reduce(g: torch.Tensor, relu_words: torch.Tensor, keep_words: torch.Tensor | None,
                                keys: torch.Tensor | None, threshold: torch.Tensor | None,
                                offset: torch.Tensor | None, scale: torch.Tensor | None, words: torch.Tensor,
                                mins: torch.Tensor, ranges: torch.Tensor, levels: torch.Tensor, bits: int,
                                uniform: bool, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column sums of the masked gradient m and of m * (x - mean). Reads only: writing m over g here would make
    inductor keep m in a temporary of g's size."""
    masked = _mask_grad(g, relu_words, keep_words, keys, threshold, offset, scale)
    centred = _decode_rows(words, mins, ranges, levels, bits, uniform) - mean
    return masked.sum(dim=(0, 1)), (masked * centred).sum(dim=(0, 1))


def _activation_backward_apply(g: torch.Tensor, relu_words: torch.Tensor, keep_words: torch.Tensor | None,
                               keys: torch.Tensor | None, threshold: torch.Tensor | None,
                               offset: torch.Tensor | None, scale: torch.Tensor | None, words: torch.Tensor,
                               mins: torch.Tensor, ranges: torch.Tensor, levels: torch.Tensor, bits: int,
                               uniform: bool, mean: torch.Tensor, mean_g: torch.Tensor, k: torch.Tensor,
                               col_scale: torch.Tensor) -> None:
    """Overwrites ``g`` with the BatchNorm input gradient of its masked self (as activation._batch_norm_backward_
    after the masks)."""
    masked = _mask_grad(g, relu_words, keep_words, keys, threshold, offset, scale)
    centred = _decode_rows(words, mins, ranges, levels, bits, uniform) - mean
    g.copy_((masked - mean_g - centred * k) * col_scale)


_activation_backward_reduce_compiled = _compile(_activation_backward_reduce)
_activation_backward_apply_compiled = _compile(_activation_backward_apply)


def activation_backward_fused(g: torch.Tensor, relu_mask: torch.Tensor, drop_mask: torch.Tensor | None, p: float,
                              seed: int, lean: bool, bn: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """activation.activation_backward with BatchNorm in two passes, overwriting ``g`` with the gradient of y;
    returns (grad weight, grad bias), or None (``g`` untouched) where the fused loops do not apply."""
    from sustainml_exp.compress.activation import bn_backward_coefficients

    if bn is None:
        return None
    q = bn.q_input
    n, d = g.shape
    group_rows = q.group_size // max(d, 1)
    g3, relu_words, keep_words = _word_layout(g), _as_words(relu_mask), None
    if drop_mask is not None:
        keep_words = _as_words(drop_mask)
    if (g3 is None or relu_words is None or (drop_mask is not None and keep_words is None) or q.tail is not None
            or q.shape != (n, d) or q.group_size % d or (d * q.bits) % _WORD_BITS):
        return None
    words = _as_words(q.payload)
    if words is None:
        return None
    levels = torch.tensor(ref.dequant_level_table(q.bits, q.vm_a), dtype=torch.float32, device=g.device)
    keys = threshold = None
    scale = None
    if p > 0:
        keys, threshold, scale = _dropout_constants(p, seed, g.device)
        if not lean:
            keys = threshold = None
    mean = _column_view(bn.mean)
    # Whole groups, then the short last group (its own static shape): [groups, rows, D / 32, 32] views.
    full_rows = (n // group_rows) * group_rows
    blocks = [(0, full_rows, full_rows // group_rows)] if full_rows else []
    if full_rows < n:
        blocks.append((full_rows, n, 1))
    words_per_row = d * q.bits // _WORD_BITS
    mask_words_per_row = d // _WORD_BITS

    def views(start: int, stop: int, groups: int) -> tuple[Any, ...]:
        rows = (stop - start) // groups
        shape = (groups, rows, d // _WORD_BITS)
        first_group = start // group_rows
        return (g3[start:stop].view(*shape, _WORD_BITS),
                relu_words[start * mask_words_per_row: stop * mask_words_per_row].view(shape),
                None if keep_words is None else keep_words[start * mask_words_per_row:
                                                           stop * mask_words_per_row].view(shape),
                words[start * words_per_row: stop * words_per_row].view(*shape, q.bits),
                q.mins[first_group: first_group + groups], q.ranges[first_group: first_group + groups])

    sum_g = torch.zeros_like(mean)
    dot = torch.zeros_like(mean)
    for start, stop, groups in blocks:
        g4, relu4, keep4, words4, mins, ranges = views(start, stop, groups)
        offset = None if keys is None else torch.tensor(start * d, dtype=torch.int64, device=g.device)
        part_sum, part_dot = _activation_backward_reduce_compiled(g4, relu4, keep4, keys, threshold, offset, scale,
                                                                  words4, mins, ranges, levels, q.bits,
                                                                  q.vm_a is None, mean)
        sum_g += part_sum
        dot += part_dot
    sum_g, dot = sum_g.view(-1), dot.view(-1)
    mean_g, k, col_scale = (_column_view(v) for v in bn_backward_coefficients(sum_g, dot, bn, n))
    for start, stop, groups in blocks:
        g4, relu4, keep4, words4, mins, ranges = views(start, stop, groups)
        offset = None if keys is None else torch.tensor(start * d, dtype=torch.int64, device=g.device)
        _activation_backward_apply_compiled(g4, relu4, keep4, keys, threshold, offset, scale, words4, mins, ranges,
                                            levels, q.bits, q.vm_a is None, mean, mean_g, k, col_scale)
    return dot * bn.invstd, sum_g
