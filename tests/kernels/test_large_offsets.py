"""Kernels launched over tensors past 2^31 (and 2^32) values, without allocating them (Triton's interpreter).

Each test runs one program of a launch over a "virtual" tensor of n values: the interpreter is told to run program
``first_program`` only, and every tensor argument is handed to the kernel at a base address shifted back by the
offset of the window it holds, so the kernel's own offsets and masks (the thing under test) land in small real
buffers. The window's contents must equal the reference's for those flat offsets: quantization noise and dropout
masks are hashes of the absolute offset, so an offset or a size product that wraps in int32 shows up as wrong bytes,
and a mask that wraps negative shows up as bytes never written.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("triton")

import torch  # noqa: E402

from sustainml_kernels import quant_triton as qt  # noqa: E402
from sustainml_kernels import rp_triton as rp  # noqa: E402
from sustainml_kernels.quant_ref import (  # noqa: E402
    dequant_level_table,
    group_ranges,
    group_reciprocal,
    hash_uint32,
    pack_codes,
    project_rademacher_ref,
    rademacher_ref,
    rounding_noise,
    unpack_codes,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

SEED = 0x0123456789ABCDEF
PROJ_SEED = 0xFEDCBA9876543210
BEYOND_2_32 = 2**32 + 2**20  # size arguments typed i64, offsets past 2^32
BELOW_2_31 = 2**30 + 2**20  # size arguments typed i32 whose products with bits pass 2^31 (the old mask bug)


@contextmanager
def program_of_virtual_launch(first_program: int, shifts: dict[int, int]):
    """Within the block, a launch with grid (1,) runs as program ``first_program``, and a tensor whose data_ptr is
    a key of ``shifts`` is passed at data_ptr - shift (bytes)."""
    from triton.runtime import interpreter

    original_cvt = interpreter._implicit_cvt
    builder = interpreter.interpreter_builder
    original_set, original_dim = builder.set_grid_idx, builder.set_grid_dim

    def cvt(arg):
        converted = original_cvt(arg)
        if hasattr(arg, "data_ptr") and arg.data_ptr() in shifts:
            converted.handle.data = np.array([arg.data_ptr() - shifts[arg.data_ptr()]], dtype=np.uint64)
        return converted

    interpreter._implicit_cvt = cvt
    builder.set_grid_dim = lambda x, y, z: original_dim(x + first_program, y, z)
    builder.set_grid_idx = lambda x, y, z: original_set(x + first_program, y, z)
    try:
        yield
    finally:
        interpreter._implicit_cvt = original_cvt
        builder.set_grid_idx, builder.set_grid_dim = original_set, original_dim


def _window_quantize_ref(x: torch.Tensor, bits: int, group_size: int, start: int) -> tuple[torch.Tensor, ...]:
    """Payload, mins and ranges of values x that sit at flat offsets [start, start + n) of a bigger tensor (start on
    a group boundary; a short last group is the tensor's own): the documented recipe with the absolute offsets."""
    groups = list(torch.split(x, group_size))
    mins, ranges = group_ranges(torch.stack([g.min() for g in groups]), torch.stack([g.max() for g in groups]))
    inv = group_reciprocal(ranges, bits)
    per_value = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([g.numel() for g in groups]))
    s = (x - mins[per_value]) * inv[per_value]
    codes = ((s.to(torch.int64) + rounding_noise(SEED, start, x.numel())) >> 16).clamp_max((1 << bits) - 1)
    return pack_codes(codes.to(torch.uint8), bits), mins.to(torch.bfloat16), ranges.to(torch.bfloat16)


def _randn(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("n_total", [BELOW_2_31, BEYOND_2_32], ids=["i32-sizes", "i64-sizes"])
@pytest.mark.parametrize("masked", [False, True], ids=["bulk", "tail"])
@pytest.mark.parametrize("group_size", [16, 1024], ids=["thread-per-group-stats", "row-tile-stats"])
def test_row_quantize_and_dequantize_far_into_a_tensor(n_total: int, masked: bool, group_size: int) -> None:
    bits = 2
    tiling = qt.row_tiling(group_size, n_total // group_size, bits)
    tile = n_total // group_size // tiling.rows - 1  # a program near the end
    start = tile * tiling.rows * group_size
    n_groups = n_total // group_size + masked  # the tail case ends in a short group inside the window
    n_packed = start + (tiling.rows - 1) * group_size + group_size // 2 + 2 if masked else n_total
    n = n_packed - start if masked else tiling.rows * group_size
    x = _randn(n, seed=1)
    payload = torch.zeros(-(-n * bits // 8), dtype=torch.uint8)
    mins = torch.zeros(-(-n // group_size), dtype=torch.bfloat16)
    ranges = torch.zeros_like(mins)
    first_group = start // group_size
    shifts = {x.data_ptr(): 4 * start, payload.data_ptr(): start * bits // 8, mins.data_ptr(): 2 * first_group,
              ranges.data_ptr(): 2 * first_group}
    meta = {"BITS": bits, "LEVELS_TOP": 3, "USE_VM": False, "ROWS": tiling.rows, "HALF": tiling.chunk // 2,
            "LOOPED": False, "MASKED": masked, "ROW_UNROLL": qt._row_unroll(tiling, group_size), **qt._NO_FMA}
    with program_of_virtual_launch(0 if masked else tile, shifts):
        qt._quantize_aligned_kernel[(1,)](x, payload, mins, ranges, qt.inverse_table(bits, x.device), n_packed,
                                          n_groups, group_size, tile if masked else 0, 1, *qt.kernel_keys(SEED),
                                          *qt.vm_kernel_args(None), **meta)
    want = _window_quantize_ref(x, bits, group_size, start)
    assert torch.equal(payload, want[0]) and torch.equal(mins, want[1]) and torch.equal(ranges, want[2])

    out = torch.zeros(n)
    shifts = {payload.data_ptr(): start * bits // 8, mins.data_ptr(): 2 * first_group,
              ranges.data_ptr(): 2 * first_group, out.data_ptr(): 4 * start}
    with program_of_virtual_launch(0 if masked else tile, shifts):
        qt._dequantize_rows_kernel[(1,)](payload, mins, ranges, out, n_packed, n_groups, group_size,
                                         tile if masked else 0, 1, dequant_level_table(bits, None)[1], 0.0, 0.0,
                                         BITS=bits, USE_VM=False, ROWS=tiling.rows, CHUNK=tiling.chunk,
                                         MASKED=masked, **qt._NO_FMA)
    level = torch.tensor(dequant_level_table(bits, None))[unpack_codes(payload, bits, n).long()]
    group = torch.arange(n) // group_size
    assert torch.equal(out, level * ranges.float()[group] + mins.float()[group])


@pytest.mark.parametrize("n_total", [BELOW_2_31, BEYOND_2_32], ids=["i32-sizes", "i64-sizes"])
@pytest.mark.parametrize("masked", [False, True], ids=["bulk", "checked"])
def test_general_quantize_and_flat_dequantize_far_into_a_tensor(n_total: int, masked: bool) -> None:
    """Groups of 63 values ending mid-byte: the flat kernels index groups from the program's start, whose group
    and phase come from an fp64 reciprocal (no 64-bit division) and must be exact there."""
    bits, group_size, block = 2, 63, qt._FLAT_BLOCK
    program = n_total // block - 2
    start = program * block
    first_group = start // group_size
    n_groups_window = -(-(start + block) // group_size) - first_group
    window_start = first_group * group_size  # the stats scratch is filled for the whole groups the block touches
    x = _randn(n_groups_window * group_size, seed=2)
    stats_ref = _window_quantize_ref(x, bits, group_size, window_start)
    mins_f32, ranges_f32 = stats_ref[1].float(), stats_ref[2].float()
    stats = torch.stack([mins_f32, group_reciprocal(ranges_f32, bits)], dim=1).contiguous()
    payload = torch.zeros(block * bits // 8, dtype=torch.uint8)
    group_index, *group_consts = qt.group_index_args(group_size, block)
    shifts = {x.data_ptr(): 4 * window_start, payload.data_ptr(): start * bits // 8, stats.data_ptr(): 8 * first_group}
    # The bulk launch reaches the program through its id, the checked one through program_base.
    with program_of_virtual_launch(0 if masked else program, shifts):
        qt._quantize_flat_kernel[(1,)](x, payload, stats, n_total, -(-n_total * bits // 8), group_size, *group_consts,
                                       program if masked else 0, *qt.kernel_keys(SEED), *qt.vm_kernel_args(None),
                                       BITS=bits, LEVELS_TOP=3, USE_VM=False, GROUP_INDEX=group_index,
                                       HALF=block // 2, MASKED=masked, **qt._NO_FMA)
    offset = start - window_start  # the block inside the window (the window need not start on a byte)
    window_codes = unpack_codes(stats_ref[0], bits, x.numel())
    assert torch.equal(payload, pack_codes(window_codes[offset: offset + block], bits))

    out = torch.zeros(block)
    mins, ranges = stats_ref[1].contiguous(), stats_ref[2].contiguous()
    shifts = {payload.data_ptr(): start * bits // 8, mins.data_ptr(): 2 * first_group,
              ranges.data_ptr(): 2 * first_group, out.data_ptr(): 4 * start}
    group_index, *group_consts = qt.group_index_args(group_size, qt._DEQUANT_VALUES)
    dequant_program = start // qt._DEQUANT_VALUES
    with program_of_virtual_launch(0 if masked else dequant_program, shifts):
        qt._dequantize_kernel[(1,)](payload, mins, ranges, out, n_total, -(-n_total * bits // 8), group_size,
                                    *group_consts, dequant_program if masked else 0,
                                    dequant_level_table(bits, None)[1], 0.0, 0.0, BITS=bits, USE_VM=False,
                                    GROUP_INDEX=group_index, BYTES=qt._DEQUANT_VALUES * bits // 8, MASKED=masked,
                                    **qt._NO_FMA)
    level = torch.tensor(dequant_level_table(bits, None))[unpack_codes(payload, bits, block).long()]
    group = (torch.arange(block) + offset) // group_size
    assert torch.equal(out, level * ranges.float()[group] + mins.float()[group])


@pytest.mark.parametrize("n_total", [2**31 + 8 * qt._MASK_BLOCK_BYTES + 5, BEYOND_2_32 + 3], ids=["2^31", "2^32"])
def test_mask_kernels_far_into_a_tensor(n_total: int) -> None:
    """The last program of each 1-bit mask kernel: offsets, the element mask and the byte count past 2^31."""
    per_program = 8 * qt._MASK_BLOCK_BYTES
    program = (n_total - 1) // per_program
    start = program * per_program
    n = n_total - start  # the ragged end lies in this program
    x = _randn(per_program, seed=3)
    out = torch.full((per_program,), 7.0)
    packed = torch.zeros(qt._MASK_BLOCK_BYTES, dtype=torch.uint8)
    n_bytes = -(-n_total // 8)
    byte_start = start // 8
    shifts = {x.data_ptr(): 4 * start, out.data_ptr(): 4 * start, packed.data_ptr(): byte_start}
    with program_of_virtual_launch(program, shifts):
        qt._dropout_kernel[(1,)](x, out, packed, n_total, n_bytes, *qt.kernel_keys(SEED), math.ceil(0.5 * 2**24), 2.0,
                                 STORE_MASK=True, BLOCK_BYTES=qt._MASK_BLOCK_BYTES, **qt._NO_FMA)
    keep = (hash_uint32(SEED, torch.arange(start, start + n)) >> 8) >= math.ceil(0.5 * 2**24)
    assert torch.equal(out[:n], torch.where(keep, x[:n] * 2.0, 0.0))
    assert torch.equal(out[n:], torch.full((per_program - n,), 7.0))  # nothing written past the end
    assert torch.equal(packed[: -(-n // 8)], pack_codes(keep.to(torch.uint8), 1))
    assert not packed[-(-n // 8):].any()

    relu_out, relu_packed = torch.zeros(per_program), torch.zeros_like(packed)
    shifts = {x.data_ptr(): 4 * start, relu_out.data_ptr(): 4 * start, relu_packed.data_ptr(): byte_start}
    with program_of_virtual_launch(program, shifts):
        qt._relu_pack_kernel[(1,)](x, relu_out, relu_packed, n_total, n_bytes, BLOCK_BYTES=qt._MASK_BLOCK_BYTES,
                                   **qt._NO_FMA)
    assert torch.equal(relu_out[:n], torch.relu(x[:n]))
    assert torch.equal(relu_packed[: -(-n // 8)], pack_codes((x[:n] > 0).to(torch.uint8), 1))

    scaled = torch.zeros(per_program)
    shifts = {x.data_ptr(): 4 * start, relu_packed.data_ptr(): byte_start, scaled.data_ptr(): 4 * start}
    with program_of_virtual_launch(program, shifts):
        qt._masked_scale_kernel[(1,)](x, relu_packed, scaled, n_total, n_bytes, 3.0,
                                      BLOCK_BYTES=qt._MASK_BLOCK_BYTES, **qt._NO_FMA)
    assert torch.equal(scaled[:n], torch.where(x[:n] > 0, x[:n] * 3.0, 0.0))


def test_projection_kernels_far_into_a_tensor() -> None:
    """Rows past 2^31 / r of an N x D input: row offsets and the projected flat offsets (noise counters) in int64;
    the sequential kernels against the reference bytes, the tl.dot kernel against its own small launch."""
    d, r, bits, group_size = 24, 16, 2, 64  # four rows per group
    rows_before = (BEYOND_2_32 // r // 64) * 64  # a whole number of tiles of every kernel below
    x = _randn(64 * d, seed=4).view(64, d)
    n_rows = rows_before + 64
    start = rows_before * r

    out = torch.zeros(64, r)
    args = rp._projection_args(x, PROJ_SEED, r)
    with program_of_virtual_launch(start // rp._PROJECT_BLOCK, {x.data_ptr(): 4 * rows_before * d,
                                                                out.data_ptr(): 4 * start}):
        rp._project_kernel[(1,)](x, out, n_rows * r, *args[1:8], SIGN_WORDS=args[8], BLOCK=rp._PROJECT_BLOCK,
                                 **rp._NO_FMA)
    assert torch.equal(out, project_rademacher_ref(x, PROJ_SEED, r))

    payload = torch.zeros(64 * r * bits // 8, dtype=torch.uint8)
    mins = torch.zeros(64 * r // group_size, dtype=torch.bfloat16)
    ranges = torch.zeros_like(mins)
    first_group = start // group_size
    shifts = {x.data_ptr(): 4 * rows_before * d, payload.data_ptr(): start * bits // 8,
              mins.data_ptr(): 2 * first_group, ranges.data_ptr(): 2 * first_group}
    groups_per_prog = rp._TILE_ELEMS // group_size
    n_groups = n_rows * r // group_size
    with program_of_virtual_launch(first_group // groups_per_prog, shifts):
        rp._project_quantize_kernel[(1,)](
            x, payload, mins, ranges, qt.inverse_table(bits, x.device), n_rows * r, n_groups, group_size, *args[1:8],
            *qt.kernel_keys(SEED), *qt.vm_kernel_args(None), BITS=bits, LEVELS_TOP=3, USE_VM=False,
            SIGN_WORDS=args[8], ROWS=groups_per_prog, HALF=group_size // 2, **rp._NO_FMA)
    want = _window_quantize_ref(project_rademacher_ref(x, PROJ_SEED, r).reshape(-1), bits, group_size, start)
    assert torch.equal(payload, want[0]) and torch.equal(mins, want[1]) and torch.equal(ranges, want[2])

    fast = [torch.zeros_like(t) for t in (payload, mins, ranges)]
    shifts = {x.data_ptr(): 4 * rows_before * d, fast[0].data_ptr(): start * bits // 8,
              fast[1].data_ptr(): 2 * first_group, fast[2].data_ptr(): 2 * first_group}
    with program_of_virtual_launch(rows_before // rp._DOT_ROWS, shifts):
        rp._project_quantize_dot_kernel[(1,)](
            x, *fast, qt.inverse_table(bits, x.device), n_rows, n_rows * r, n_groups, x.stride(0), x.stride(1), d,
            args[5], *qt.kernel_keys(PROJ_SEED), *qt.kernel_keys(SEED), *qt.vm_kernel_args(None), BITS=bits,
            LEVELS_TOP=3, USE_VM=False, R=r, GROUP_ROWS=group_size // r, BLOCK_N=rp._DOT_ROWS, BLOCK_K=rp._DOT_K,
            **rp._NO_FMA)
    projected = (x @ rademacher_ref(PROJ_SEED, d, r)).reshape(-1)  # the same blocked-sum family as tl.dot
    want = _window_quantize_ref(projected, bits, group_size, start)
    torch.testing.assert_close(fast[2].float(), want[2].float(), rtol=0.02, atol=0)
    assert (fast[0] != want[0]).double().mean().item() < 0.05  # codes differ only where rounding crosses a level
