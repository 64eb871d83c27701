"""sustainml_kernels.quant_triton against the bit-exact reference in quant_ref (run under Triton's interpreter).

Every kernel runs under TRITON_INTERPRET=1 (tests/conftest.py sets it before triton is imported) on small awkward
shapes: odd row counts, ragged last groups, raw fp32 tails and group lengths that are not powers of two. For the same
seed it must produce the same bytes as the torch reference; unpacking must invert packing exactly; the dequantized
mean over many seeds must converge to the input (stochastic rounding is unbiased, with and without VM levels).

The quantization tests name the kernel path a case takes (see ``_path``): ``fused`` (byte-aligned groups of at most
MAX_GROUP_TILE values, several groups per program), ``looped`` (byte-aligned groups wider than MAX_GROUP_TILE, walked
in column chunks) and ``general`` (groups whose codes end mid-byte, or of odd length: a stats kernel, then a flat
kernel).
"""

import pytest

pytest.importorskip("triton")

import math  # noqa: E402

import torch  # noqa: E402

from packed_asserts import assert_same_packed, bits_of  # noqa: E402
from sustainml_exp.compress.backend import (  # noqa: E402
    _dropout_apply_torch,
    _dropout_pack_torch,
    _masked_scale_torch,
    _relu_pack_torch,
    dropout_scale,
)
from sustainml_exp.compress.vm import optimal_inner_level  # noqa: E402
from sustainml_kernels.quant_ref import (  # noqa: E402
    dequant_level_table,
    dropout_mask_ref,
    pack_codes,
    pack_mask_ref,
    quantize_pack_ref,
    unpack_codes,
    unpack_dequantize_ref,
    unpack_mask_ref,
)
from sustainml_kernels.quant_triton import (  # noqa: E402
    MAX_GROUP_TILE,
    TRITON_AVAILABLE,
    dropout_apply_triton,
    dropout_pack_triton,
    masked_scale_triton,
    pack_mask_triton,
    quantize_pack_triton,
    relu_pack_triton,
    triton_usable,
    unpack_dequantize_triton,
    unpack_mask_triton,
)

SEED = 0x0123456789ABCDEF  # both 32-bit halves non-zero, so the high seed word reaches the hash
OTHER_SEED = 0xFEDCBA9876543210
MASK64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15  # spreads consecutive seed indices over all 64 bits

ALL_BITS = (1, 2, 4, 8)  # every width quant_ref accepts (the training configs use 2, 4 and 8)
GROUP_SIZES = (1, 2, 3, 5, 8, 24, 96, 100, 1000)  # 888 values: exact, ragged and single-short-group cases
MAIN_SHAPE = (37, 24)  # odd row count; 888 values
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ELEMENTWISE_SHAPES = ((1,), (7,), (37, 24), (3, 5, 7), (1025,))  # 1025: two programs and a 1-bit last byte
DROPOUT_PS = (0.0, 0.1, 0.3, 0.5, 1.0)

# The interpreter runs kernels in numpy, which warns about the inf/NaN arithmetic the special-value tests ask for.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")



# --------------------------------------------------------------------------------------------- helpers


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 2.0,
           shift: float = 0.25) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + shift).to(dtype)


def _path(bits: int, group_size: int) -> str:
    """Which quantize path quantize_pack_triton takes for these arguments."""
    if group_size * bits % 8 or group_size % 2:  # the row tiles need whole bytes and whole noise pairs per group
        return "general"
    return "looped" if group_size > MAX_GROUP_TILE else "fused"


def _seed(k: int) -> int:
    return (SEED + k * GOLDEN) & MASK64


def _quantize_both(x: torch.Tensor, bits: int, group_size: int, seed: int = SEED, vm_a: float | None = None,
                   fp32_tail: bool = False):
    """Triton and reference packings of x, asserted identical byte for byte; returns (triton, reference)."""
    got = quantize_pack_triton(x, bits, group_size, seed, vm_a, fp32_tail)
    want = quantize_pack_ref(x, bits, group_size, seed, vm_a, fp32_tail)
    assert_same_packed(got, want)
    return got, want


def _assert_same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(bits_of(got), bits_of(want))


def _assert_dequantize_matches(packed, shape, bits: int, group_size: int, vm_a: float | None = None) -> torch.Tensor:
    got = unpack_dequantize_triton(*packed, shape, bits, group_size, vm_a)
    want = unpack_dequantize_ref(*packed, shape, bits, group_size, vm_a)
    assert got.dtype == torch.float32 and got.shape == tuple(shape)
    _assert_same_bits(got, want)
    return got


def _n_packed(numel: int, group_size: int, fp32_tail: bool) -> int:
    return numel - numel % group_size if fp32_tail else numel


def _with_specials(x: torch.Tensor, specials: list[float]) -> torch.Tensor:
    """x (float32) with its first values replaced by ``specials`` (as many as fit), in x's shape."""
    flat = x.reshape(-1).clone()
    k = min(len(specials), flat.numel())
    flat[:k] = torch.tensor(specials[:k], dtype=flat.dtype)
    return flat.view(x.shape)


# --------------------------------------------------------------------------------------------- availability


def test_triton_is_usable_on_cpu_under_the_interpreter() -> None:
    assert TRITON_AVAILABLE
    assert triton_usable(torch.device("cpu"))
    assert triton_usable("cpu")
    assert not triton_usable(torch.device("meta"))
    assert isinstance(MAX_GROUP_TILE, int) and MAX_GROUP_TILE >= 8


def test_cpu_tensors_without_the_interpreter_are_a_clear_error(monkeypatch) -> None:
    # triton_usable reads the flag at call time, so flipping it here is enough to reach the guard.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_usable(torch.device("cpu"))
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        quantize_pack_triton(_randn(8), 2, 4, SEED)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        relu_pack_triton(_randn(8))


# --------------------------------------------------------------------------------------------- quantize: bytes


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("bits", ALL_BITS)
def test_quantize_pack_matches_reference(bits: int, group_size: int, fp32_tail: bool) -> None:
    x = _randn(*MAIN_SHAPE, seed=1)
    got, _ = _quantize_both(x, bits, group_size, fp32_tail=fp32_tail)
    numel = x.numel()
    n_packed = _n_packed(numel, group_size, fp32_tail)
    assert got.payload.dtype == torch.uint8 and got.payload.dim() == 1
    assert got.payload.numel() == -(-n_packed * bits // 8)
    assert got.mins.dtype == got.ranges.dtype == torch.bfloat16
    assert got.mins.numel() == got.ranges.numel() == -(-n_packed // group_size)
    if numel - n_packed:
        assert got.tail.dtype == torch.float32 and got.tail.numel() == numel - n_packed
    else:
        assert got.tail is None


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize("group_size", (2, 3, 4, 5, 24, 96, 100, 1000))
def test_quantize_pack_vm_matches_reference(group_size: int, fp32_tail: bool) -> None:
    x = _randn(*MAIN_SHAPE, seed=2)
    vm_a = optimal_inner_level(group_size)
    got, _ = _quantize_both(x, 2, group_size, vm_a=vm_a, fp32_tail=fp32_tail)
    _assert_dequantize_matches(got, x.shape, 2, group_size, vm_a)


@pytest.mark.parametrize("vm_a", (0.05, 0.5, 1.0, 1.3, 1.4999))
@pytest.mark.parametrize("group_size", (4, 7))
def test_quantize_pack_matches_reference_for_any_vm_level(vm_a: float, group_size: int) -> None:
    x = _randn(13, 7, seed=3)
    got, _ = _quantize_both(x, 2, group_size, vm_a=vm_a)
    _assert_dequantize_matches(got, x.shape, 2, group_size, vm_a)


# (path, bits, group_size, numel): sizes relative to MAX_GROUP_TILE, so each case keeps its path if the tile changes.
_PATH_CASES = [
    ("fused", 2, 4, 4001),  # several programs of many groups, short last group of 1
    ("fused", 4, 6, 2003),
    ("fused", 8, 6, 1001),
    ("fused", 1, 24, 4099),
    ("fused", 8, MAX_GROUP_TILE, MAX_GROUP_TILE + 7),  # widest group held in one tile
    ("looped", 2, MAX_GROUP_TILE + 4, 2 * (MAX_GROUP_TILE + 4) + 37),  # two column chunks, ragged last group
    ("looped", 4, MAX_GROUP_TILE + 2, MAX_GROUP_TILE + 2 + 5),
    ("looped", 8, MAX_GROUP_TILE + 2, MAX_GROUP_TILE + 2 + 300),
    ("general", 2, 3, 4001),  # several stats programs and several flat programs
    ("general", 4, 5, 2049),
    ("general", 1, 7, 1031),
    ("general", 2, MAX_GROUP_TILE + 1, MAX_GROUP_TILE + 1 + 33),  # stats kernel walks two column chunks
    ("general", 4, MAX_GROUP_TILE + 3, MAX_GROUP_TILE + 3 + 2),
    ("general", 8, 7, 1001),  # byte-aligned but odd: pairs of values straddle groups
    ("general", 8, MAX_GROUP_TILE + 1, MAX_GROUP_TILE + 1 + 300),
]


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize(("path", "bits", "group_size", "numel"), _PATH_CASES,
                         ids=[f"{p}-b{b}-g{g}-n{n}" for p, b, g, n in _PATH_CASES])
def test_every_quantize_path_matches_reference(path: str, bits: int, group_size: int, numel: int,
                                               fp32_tail: bool) -> None:
    assert _path(bits, group_size) == path
    x = _randn(numel, seed=numel)
    got, _ = _quantize_both(x, bits, group_size, fp32_tail=fp32_tail)
    _assert_dequantize_matches(got, x.shape, bits, group_size)


@pytest.mark.parametrize("group_size", (5, MAX_GROUP_TILE + 4))
def test_vm_on_the_looped_and_general_paths(group_size: int) -> None:
    x = _randn(group_size + 9, seed=4)
    vm_a = optimal_inner_level(group_size)
    for fp32_tail in (False, True):
        got, _ = _quantize_both(x, 2, group_size, vm_a=vm_a, fp32_tail=fp32_tail)
        _assert_dequantize_matches(got, x.shape, 2, group_size, vm_a)


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize(("bits", "group_size"), [(2, 5), (4, 6), (8, 7), (1, 16)])
@pytest.mark.parametrize("shape", [(1,), (7,), (13,), (1001,), (3, 5, 7), (2, 1, 9), (5, 1), (0,), (4, 0, 3)],
                         ids=str)
def test_quantize_pack_shapes(shape: tuple[int, ...], bits: int, group_size: int, fp32_tail: bool) -> None:
    x = _randn(*shape, seed=5)
    got, _ = _quantize_both(x, bits, group_size, fp32_tail=fp32_tail)
    out = _assert_dequantize_matches(got, x.shape, bits, group_size)
    assert out.shape == x.shape


def test_non_contiguous_inputs_are_read_in_row_major_order() -> None:
    base = _randn(24, 37, seed=6)
    expanded = _randn(1, 24, seed=7).expand(5, 24)
    for x in (base.t(), base[:, ::3], base[1::2], expanded):
        assert not x.is_contiguous()
        for bits, group_size in ((2, 5), (4, 24)):
            got, _ = _quantize_both(x, bits, group_size)
            assert_same_packed(quantize_pack_triton(x.contiguous(), bits, group_size, SEED), got)


def test_quantize_neither_modifies_nor_needs_a_detached_input() -> None:
    x = _randn(9, 11, seed=8).requires_grad_(True)
    before = x.detach().clone()
    for bits, group_size in ((2, 4), (2, 5)):
        _quantize_both(x, bits, group_size)
    assert torch.equal(bits_of(x.detach()), bits_of(before))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_low_and_high_precision_inputs_quantize_like_their_fp32_cast(dtype: torch.dtype) -> None:
    x = _randn(11, 9, seed=9, dtype=dtype)
    for bits, group_size in ((2, 4), (4, 5), (8, 12)):
        got, _ = _quantize_both(x, bits, group_size)
        assert_same_packed(got, quantize_pack_triton(x.to(torch.float32), bits, group_size, SEED))


def _special_input(kind: str) -> torch.Tensor:
    if kind == "constant_groups":  # range 0 (bf16-exact constants) and tiny ranges (0.1 is not bf16-exact)
        return torch.tensor([1.5] * 12 + [0.1] * 12 + [-3.0] * 12 + [0.0] * 12 + [7.0] * 5)
    if kind == "negative_zeros":
        return torch.tensor([-0.0] * 12 + [0.0, -0.0] * 6 + [-0.0, 0.0] * 6 + [-0.0, 1.0, -2.0] * 4 + [-0.0] * 5)
    if kind == "large_magnitudes":  # |x| <= 1e38, so no group range overflows fp32
        return torch.tensor([1e38, 3e37, 1e37, 9e37] * 3 + [-1e38, -5e37, -2e37, -8e37] * 3
                            + [1e38, -1e38, 0.5, 1e-20] * 3 + [3e30, 1.0, -7e29] * 3 + [2e35] * 5)
    if kind == "tiny_normals":  # small normal values whose group minima and ranges stay normal too
        tiny = 2.0**-124  # k * tiny is bf16-exact, so constant groups get range 0 rather than a subnormal one
        return torch.tensor([k * tiny for k in range(1, 13)] + [-k * tiny for k in range(1, 13)] * 2
                            + [3 * tiny] * 12 + [1.234e-37, 9.87e-37, -5.5e-37, 3.3e-36] * 3
                            + [5 * tiny, -5 * tiny, tiny, 2 * tiny, 0.0])
    if kind == "bf16_grid":  # values exactly on bf16 and on the code grid: h lands on exact integers
        return torch.tensor([-1.5, 2.25, 0.375, -1.5] * 6 + [0.0, 3.0, 1.0, 2.0] * 6 + [1.0, 1.0, 0.5, 0.25, 4.0])
    if kind == "one_outlier":  # one huge value squashes the rest of its group into code 0 / 1
        return torch.tensor([1e6] + [0.01 * k for k in range(47)] + [-2.0, 1e-3, 5.0, 1e6, -1e6])
    raise AssertionError(kind)


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize(("bits", "group_size"), [(2, 12), (2, 7), (4, 4), (4, 6), (8, 3), (1, 12)])
@pytest.mark.parametrize("kind", ["constant_groups", "negative_zeros", "large_magnitudes", "tiny_normals",
                                  "bf16_grid", "one_outlier"])
def test_special_values_match_reference(kind: str, bits: int, group_size: int, fp32_tail: bool) -> None:
    x = _special_input(kind)
    got, _ = _quantize_both(x, bits, group_size, fp32_tail=fp32_tail)
    _assert_dequantize_matches(got, x.shape, bits, group_size)
    if bits == 2:
        vm_a = optimal_inner_level(group_size)
        got, _ = _quantize_both(x, bits, group_size, vm_a=vm_a, fp32_tail=fp32_tail)
        _assert_dequantize_matches(got, x.shape, bits, group_size, vm_a)


def test_constant_groups_have_zero_range_and_decode_to_the_constant() -> None:
    x = torch.tensor([1.5] * 6 + [-3.0] * 6 + [0.0] * 6 + [0.25] * 5)
    for bits, group_size in ((2, 6), (2, 3), (4, 6), (8, 2)):
        got, _ = _quantize_both(x, bits, group_size)
        assert torch.all(got.ranges == 0)
        assert torch.equal(got.payload, torch.zeros_like(got.payload))  # h = 0 and u < 1: every code is 0
        assert torch.equal(unpack_dequantize_triton(*got, x.shape, bits, group_size), x)


@pytest.mark.parametrize(("bits", "group_size"), [(2, 4), (2, 3)], ids=["fused", "general"])
def test_subnormal_group_minima_match_reference(bits: int, group_size: int) -> None:
    # Subnormal group minima: the kernels move bf16 through its bits, because Triton's interpreter (and a careless
    # cast) maps subnormals to wrong patterns; on the general path the flat kernel reads the minima back too.
    x = torch.tensor([1e-40, -3e-39, 2e-45, 0.0] * 3)
    _quantize_both(x, bits, group_size)


# --------------------------------------------------------------------------------------------- unpack / dequantize


_UNPACK_CASES = [(1, 9, None), (2, 3, None), (2, 24, None), (2, 5, "vm"), (2, 96, "vm"), (4, 5, None),
                 (4, 100, None), (8, 7, None), (8, 1000, None)]


@pytest.mark.parametrize("fp32_tail", [False, True], ids=["short_group", "fp32_tail"])
@pytest.mark.parametrize(("bits", "group_size", "vm"), _UNPACK_CASES)
def test_unpack_dequantize_matches_reference_across_backends(bits: int, group_size: int, vm: str | None,
                                                             fp32_tail: bool) -> None:
    x = _randn(*MAIN_SHAPE, seed=10)
    vm_a = optimal_inner_level(group_size) if vm else None
    by_triton, by_ref = _quantize_both(x, bits, group_size, vm_a=vm_a, fp32_tail=fp32_tail)
    outs = [unpack(*packed, x.shape, bits, group_size, vm_a)
            for unpack in (unpack_dequantize_triton, unpack_dequantize_ref) for packed in (by_triton, by_ref)]
    for out in outs[1:]:
        _assert_same_bits(out, outs[0])
    if by_triton.tail is not None:  # the raw tail comes back untouched
        n_packed = _n_packed(x.numel(), group_size, fp32_tail)
        assert torch.equal(bits_of(outs[0].reshape(-1)[n_packed:]), bits_of(x.reshape(-1)[n_packed:]))


@pytest.mark.parametrize(("bits", "group_size", "vm_a"),
                         [(1, 3, None), (2, 8, None), (2, 5, 0.9), (4, 100, None), (8, 9, None)])
def test_unpack_dequantize_of_arbitrary_bytes_matches_reference(bits: int, group_size: int,
                                                                vm_a: float | None) -> None:
    # Any payload (padding bits set too), any bf16 metadata: decoding is a pure function of the stored bytes.
    g = torch.Generator().manual_seed(11)
    numel, tail_len = 203, 3 if 200 % group_size == 0 else 0
    n_packed = numel - tail_len
    n_groups = -(-n_packed // group_size)
    payload = torch.randint(0, 256, (-(-n_packed * bits // 8),), dtype=torch.uint8, generator=g)
    mins = (torch.randn(n_groups, generator=g) * 100).to(torch.bfloat16)
    ranges = (torch.rand(n_groups, generator=g) * 50).to(torch.bfloat16)
    tail = torch.randn(tail_len, generator=g) if tail_len else None
    out = _assert_dequantize_matches((payload, mins, ranges, tail), (numel,), bits, group_size, vm_a)
    if tail is not None:
        assert torch.equal(bits_of(out[n_packed:]), bits_of(tail))


def test_unpack_dequantize_subnormal_metadata_matches_reference() -> None:
    # Reference-packed groups whose bf16 minimum (0x000A) and range (0x000C) are subnormal: the interpreted
    # kernel decodes 2.94e-39 where the reference decodes 9.18e-40.
    x = torch.tensor([1e-39, 2e-39, 5.0, 6.0, 1e-3, 1.0000001e-3, 0.5, 0.25])
    packed = quantize_pack_ref(x, 2, 2, SEED)
    _assert_dequantize_matches(packed, x.shape, 2, 2)


@pytest.mark.parametrize(("bits", "group_size", "vm"),
                         [(1, 5, False), (2, 3, False), (2, 8, False), (2, 3, True), (2, 8, True), (4, 6, False),
                          (4, 7, False), (8, 5, False)])
def test_unpack_inverts_pack(bits: int, group_size: int, vm: bool) -> None:
    x = _randn(17, 9, seed=12)
    vm_a = optimal_inner_level(group_size) if vm else None
    packed, _ = _quantize_both(x, bits, group_size, vm_a=vm_a)
    n = x.numel()
    codes = unpack_codes(packed.payload, bits, n)
    assert int(codes.max()) < 1 << bits
    assert torch.equal(pack_codes(codes, bits), packed.payload)  # padding bits of the last byte are 0 as well

    out = unpack_dequantize_triton(*packed, x.shape, bits, group_size, vm_a).reshape(-1)
    group = torch.arange(n) // group_size
    mn, rng = packed.mins.float()[group], packed.ranges.float()[group]
    table = torch.tensor(dequant_level_table(bits, vm_a), dtype=torch.float32)
    expected = table[codes.long()] * rng + mn  # the documented decode: one fp32 multiply, then one add
    assert torch.equal(bits_of(out), bits_of(expected))

    # Stochastic rounding picks one of the two levels around each value, inside the group's [mn, mn + rng].
    flat = x.reshape(-1)
    step = float(max(b - a for a, b in zip(table[:-1].tolist(), table[1:].tolist()))) * rng
    slack = 1e-6 * (flat.abs() + mn.abs() + rng)
    assert torch.all((out - flat).abs() <= step + slack)
    assert torch.all((out >= mn - slack) & (out <= mn + rng + slack))


@pytest.mark.parametrize(("bits", "vm"), [(1, False), (2, False), (2, True), (4, False), (8, False)])
def test_groups_of_two_bf16_values_reconstruct_exactly(bits: int, vm: bool) -> None:
    # Each group holds only its (bf16-exact) minimum and maximum: h is exactly 0 or B, so every seed gives codes
    # 0 or B and decoding returns the input bit for bit.
    group_size = 6
    g = torch.Generator().manual_seed(13)
    lows = torch.randint(-40, 40, (9,), generator=g).float() / 4
    highs = lows + torch.randint(1, 60, (9,), generator=g).float() / 4
    pick_high = torch.rand(9, group_size, generator=g) < 0.5
    pick_high[:, 0], pick_high[:, 1] = False, True
    x = torch.where(pick_high, highs[:, None], lows[:, None]).reshape(-1)[:-2]  # ragged last group of 4
    vm_a = optimal_inner_level(group_size) if vm else None
    for k in range(3):
        packed, _ = _quantize_both(x, bits, group_size, seed=_seed(k), vm_a=vm_a)
        out = unpack_dequantize_triton(*packed, x.shape, bits, group_size, vm_a)
        assert torch.equal(bits_of(out), bits_of(x))


# --------------------------------------------------------------------------------------------- seeds and statistics


@pytest.mark.parametrize(("bits", "group_size"), [(2, 4), (2, 5), (4, 100)])
def test_same_seed_same_bytes_and_different_seeds_different_payloads(bits: int, group_size: int) -> None:
    x = _randn(*MAIN_SHAPE, seed=14)
    first = quantize_pack_triton(x, bits, group_size, SEED)
    assert_same_packed(quantize_pack_triton(x, bits, group_size, SEED), first)
    # Seeds are taken modulo 2^64, in both implementations.
    assert_same_packed(quantize_pack_triton(x, bits, group_size, SEED + 2**64), first)
    _quantize_both(x, bits, group_size, seed=-1)
    assert_same_packed(quantize_pack_triton(x, bits, group_size, -1), quantize_pack_triton(x, bits, group_size, MASK64))

    # A different seed (also one that differs only in its high 32-bit word) changes the codes but not the metadata.
    for other in (OTHER_SEED, SEED ^ (1 << 40), SEED ^ 1, 0):
        changed, _ = _quantize_both(x, bits, group_size, seed=other)
        assert not torch.equal(changed.payload, first.payload)
        assert torch.equal(bits_of(changed.mins), bits_of(first.mins))
        assert torch.equal(bits_of(changed.ranges), bits_of(first.ranges))


_MEAN_CASES = [(1, 6, False, False), (2, 12, False, False), (2, 12, True, False), (2, 9, True, True),
               (4, 7, False, True), (8, 5, False, False)]


@pytest.mark.parametrize(("bits", "group_size", "vm", "fp32_tail"), _MEAN_CASES)
def test_dequantized_mean_over_seeds_converges_to_the_input(bits: int, group_size: int, vm: bool,
                                                            fp32_tail: bool) -> None:
    """Stochastic rounding is unbiased: the mean over n seeds lies within a few standard errors (at most
    step / (2 sqrt(n)) per value, step = widest level gap times the group range) of the input. Most seeds run
    through the reference, which packs the same bytes; every 40th runs through the Triton kernels as well."""
    x = _randn(7, 9, seed=15)
    flat = x.reshape(-1)
    vm_a = optimal_inner_level(group_size) if vm else None
    n_seeds = 200
    total = torch.zeros(flat.numel(), dtype=torch.float64)
    first = None
    for k in range(n_seeds):
        packed = quantize_pack_ref(x, bits, group_size, _seed(k), vm_a, fp32_tail)
        out = unpack_dequantize_ref(*packed, x.shape, bits, group_size, vm_a)
        if k % 40 == 0:
            got, _ = _quantize_both(x, bits, group_size, seed=_seed(k), vm_a=vm_a, fp32_tail=fp32_tail)
            _assert_same_bits(unpack_dequantize_triton(*got, x.shape, bits, group_size, vm_a), out)
        first = out.reshape(-1) if first is None else first
        total += out.reshape(-1).double()
    mean = total / n_seeds

    n_packed = _n_packed(flat.numel(), group_size, fp32_tail)
    table = dequant_level_table(bits, vm_a)
    widest_gap = max(b - a for a, b in zip(table[:-1], table[1:]))
    step = torch.zeros(flat.numel(), dtype=torch.float64)
    step[:n_packed] = packed.ranges.double()[torch.arange(n_packed) // group_size] * widest_gap
    tolerance = 5 * step / (2 * math.sqrt(n_seeds)) + 1e-6 * (1 + flat.double().abs())
    error = (mean - flat.double()).abs()
    assert torch.all(error <= tolerance), f"worst excess {float((error - tolerance).max()):.3g}"
    assert torch.equal(error[n_packed:], torch.zeros_like(error[n_packed:]))  # the raw tail is exact
    # Averaging actually helps: the mean is far closer to the input than one draw is.
    single_rms = float((first.double() - flat.double())[:n_packed].pow(2).mean().sqrt())
    mean_rms = float(error[:n_packed].pow(2).mean().sqrt())
    assert single_rms > 0 and mean_rms < 0.3 * single_rms


# --------------------------------------------------------------------------------------------- masks


_MASK_SHAPES = [(1,), (7,), (8,), (9,), (1001,), (1025,), (3, 5), (7, 13), (2, 3, 5), (33, 65), (0,), (4, 0)]


@pytest.mark.parametrize("fill", ["random", "all_true", "all_false"])
@pytest.mark.parametrize("shape", _MASK_SHAPES, ids=str)
def test_pack_mask_round_trip_matches_reference(shape: tuple[int, ...], fill: str) -> None:
    g = torch.Generator().manual_seed(math.prod(shape) + 16)
    mask = {"random": torch.rand(shape, generator=g) < 0.5, "all_true": torch.ones(shape, dtype=torch.bool),
            "all_false": torch.zeros(shape, dtype=torch.bool)}[fill]
    packed = pack_mask_triton(mask)
    assert packed.dtype == torch.uint8 and packed.shape == (-(-mask.numel() // 8),)
    assert torch.equal(packed, pack_mask_ref(mask))
    for source in (packed, pack_mask_ref(mask)):
        unpacked = unpack_mask_triton(source, shape)
        assert unpacked.dtype == torch.bool and unpacked.shape == mask.shape
        assert torch.equal(unpacked, mask)
    assert torch.equal(unpack_mask_triton(packed, torch.Size(shape)), unpack_mask_ref(packed, shape))


def test_pack_mask_reads_non_contiguous_masks_in_row_major_order() -> None:
    mask = torch.rand(13, 7, generator=torch.Generator().manual_seed(17)) < 0.3
    for view in (mask.t(), mask[:, ::2], mask[::3]):
        assert torch.equal(pack_mask_triton(view), pack_mask_ref(view.contiguous()))


@pytest.mark.parametrize("shape", [(1,), (9,), (1001,), (3, 7)], ids=str)
def test_unpack_mask_ignores_padding_bits_like_the_reference(shape: tuple[int, ...]) -> None:
    n = math.prod(shape)
    packed = torch.randint(0, 256, (-(-n // 8),), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    packed[-1] = 0xFF  # padding bits set
    assert torch.equal(unpack_mask_triton(packed, shape), unpack_mask_ref(packed, shape))


# --------------------------------------------------------------------------------------------- fused elementwise ops


def _elementwise_input(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    return _randn(*shape, seed=seed, scale=3.0, shift=0.0).to(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_relu_pack_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    specials = [-0.0, 0.0, float("inf"), -float("inf"), float("nan"), -1e-30, 1e-30]
    x = _with_specials(_randn(*shape, seed=18, scale=3.0, shift=0.0), specials).to(dtype)
    out, packed = relu_pack_triton(x)
    want_out, want_packed = _relu_pack_torch(x)
    _assert_same_bits(out, want_out)  # -0.0 and NaN pass through as torch.relu leaves them
    assert torch.equal(packed, want_packed)


def test_relu_pack_of_a_non_contiguous_input() -> None:
    x = _randn(9, 13, seed=19).t()
    out, packed = relu_pack_triton(x)
    want_out, want_packed = _relu_pack_torch(x)
    _assert_same_bits(out, want_out)
    assert torch.equal(packed, want_packed)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("p", DROPOUT_PS)
def test_dropout_pack_and_apply_match_torch(p: float, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = _elementwise_input(shape, dtype, seed=20)
    out, packed = dropout_pack_triton(x, p, SEED)
    want_out, want_packed = _dropout_pack_torch(x, p, SEED)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(packed, want_packed)  # the stored mask: identical bytes
    assert torch.equal(bits_of(out), bits_of(want_out))
    assert torch.equal(unpack_mask_triton(packed, shape), dropout_mask_ref(SEED, shape, p))

    applied = dropout_apply_triton(x, p, SEED)  # the backward regenerates the same mask from the seed
    assert torch.equal(applied, _dropout_apply_torch(x, p, SEED))
    assert torch.equal(bits_of(applied), bits_of(out))


@pytest.mark.parametrize("op", ["dropout_pack", "dropout_apply"])
def test_dropout_dropped_negative_values_are_positive_zero_as_in_torch(op: str) -> None:
    x = -(_randn(64, seed=21).abs() + 0.5)
    got = dropout_pack_triton(x, 0.5, SEED)[0] if op == "dropout_pack" else dropout_apply_triton(x, 0.5, SEED)
    _assert_same_bits(got, _dropout_apply_torch(x, 0.5, SEED))


def test_dropout_drops_non_finite_values_to_zero_as_in_torch() -> None:
    keep = dropout_mask_ref(SEED, (32,), 0.5)
    x = torch.where(keep, 1.0, torch.tensor([float("inf"), -float("inf"), float("nan"), 2.0]).repeat(8))
    got = dropout_pack_triton(x, 0.5, SEED)[0]
    want = _dropout_pack_torch(x, 0.5, SEED)[0]
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_keeps_about_one_minus_p(p: float) -> None:
    n = 8192
    x = torch.ones(n)
    out, packed = dropout_pack_triton(x, p, SEED)
    kept = unpack_mask_triton(packed, (n,))
    fraction = kept.float().mean().item()
    assert abs(fraction - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(out, torch.where(kept, torch.tensor(dropout_scale(p)), torch.tensor(0.0)))
    # A different seed (even one differing only in its high word) draws a different mask.
    for other in (OTHER_SEED, SEED ^ (1 << 40)):
        assert not torch.equal(dropout_pack_triton(x, p, other)[1], packed)
    assert torch.equal(dropout_pack_triton(x, p, SEED)[1], packed)


def test_dropout_extremes_keep_everything_or_nothing() -> None:
    x = _randn(37, 3, seed=22)
    out, packed = dropout_pack_triton(x, 0.0, SEED)
    assert torch.equal(bits_of(out), bits_of(x)) and torch.all(unpack_mask_triton(packed, x.shape))
    out, packed = dropout_pack_triton(x, 1.0, SEED)
    assert torch.all(out == 0) and not torch.any(unpack_mask_triton(packed, x.shape))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("scale", [dropout_scale(0.3), dropout_scale(0.5), dropout_scale(1.0), 1.0, 2.5, 1 / 3])
def test_masked_scale_matches_torch(scale: float, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    specials = [-0.0, 0.0, float("inf"), -float("inf"), -1e-30, 1e-30, 65504.0]
    t = _with_specials(_elementwise_input(shape, torch.float32, seed=23), specials).to(dtype)
    g = torch.Generator().manual_seed(24)
    mask = torch.rand(shape, generator=g) < 0.6
    packed = pack_mask_ref(mask)
    if packed.numel():
        packed[-1] |= (0xFF << (mask.numel() % 8 or 8)) & 0xFF  # set the padding bits: they must be ignored
    got = masked_scale_triton(t, packed, scale)
    want = _masked_scale_torch(t, packed, scale)
    # A kept inf times scale 0 is NaN in both; only its payload may differ (torch's bf16 NaN is 0xFFFF).
    assert torch.equal(got.isnan(), want.isnan())
    _assert_same_bits(torch.where(got.isnan(), 0.0, got), torch.where(want.isnan(), 0.0, want))


def test_masked_scale_after_dropout_equals_dropout_apply() -> None:
    # Backward from the stored mask and backward from the seed agree.
    t = _randn(37, 5, seed=25)
    for p in (0.0, 0.3, 0.5):
        _, packed = dropout_pack_triton(_randn(37, 5, seed=26), p, SEED)
        from_mask = masked_scale_triton(t, packed, dropout_scale(p))
        assert torch.equal(from_mask, dropout_apply_triton(t, p, SEED))


@pytest.mark.parametrize("op", ["dropout_apply", "masked_scale"])
def test_bf16_subnormal_inputs_match_torch(op: str) -> None:
    # bf16 subnormal inputs must widen exactly (the interpreter's own bf16 -> fp32 cast gets them wrong).
    t = torch.tensor([1e-39, -1e-39, 3e-40, 1e-7, -6e-8]).to(torch.bfloat16)
    if op == "dropout_apply":
        got, want = dropout_apply_triton(t, 0.0, SEED), _dropout_apply_torch(t, 0.0, SEED)
    else:
        packed = pack_mask_ref(torch.ones(5, dtype=torch.bool))
        got, want = masked_scale_triton(t, packed, 1.3), _masked_scale_torch(t, packed, 1.3)
    _assert_same_bits(got, want)


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bits", [0, 3, 5, 16])
def test_quantize_rejects_unsupported_bits(bits: int) -> None:
    with pytest.raises(ValueError, match=f"bits={bits} is not supported; allowed: 1, 2, 4, 8"):
        quantize_pack_triton(_randn(8), bits, 4, SEED)
    with pytest.raises(ValueError, match=f"bits={bits} is not supported"):
        unpack_dequantize_triton(torch.zeros(1, dtype=torch.uint8), torch.zeros(1, dtype=torch.bfloat16),
                                 torch.zeros(1, dtype=torch.bfloat16), None, (4,), bits, 4)


@pytest.mark.parametrize("group_size", [0, -4, 2.5, True, "8"])
def test_quantize_rejects_bad_group_sizes(group_size) -> None:
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        quantize_pack_triton(_randn(8), 2, group_size, SEED)


def test_quantize_rejects_bad_vm_levels() -> None:
    with pytest.raises(ValueError, match="variance-minimised levels need bits=2, got bits=4"):
        quantize_pack_triton(_randn(8), 4, 4, SEED, vm_a=1.0)
    for vm_a in (0.0, 1.5, -0.3, 2.0):
        with pytest.raises(ValueError, match=r"vm_a must lie in \(0, 1.5\)"):
            quantize_pack_triton(_randn(8), 2, 4, SEED, vm_a=vm_a)


def test_unpack_rejects_corrupt_layouts() -> None:
    x = _randn(23, seed=27)
    packed = quantize_pack_triton(x, 2, 5, SEED)  # 5 groups (the last one short), 6 payload bytes
    with pytest.raises(ValueError, match="23 codes of 2 bits need 6 bytes, got 5"):
        unpack_dequantize_triton(packed.payload[:-1], packed.mins, packed.ranges, None, x.shape, 2, 5)
    with pytest.raises(ValueError, match="23 codes of 2 bits need 6 bytes, got 7"):
        unpack_dequantize_triton(torch.cat([packed.payload, packed.payload[:1]]), packed.mins, packed.ranges, None,
                                 x.shape, 2, 5)
    with pytest.raises(ValueError, match="expected 5 group minima/ranges, got 4/4"):
        unpack_dequantize_triton(packed.payload, packed.mins[:-1], packed.ranges[:-1], None, x.shape, 2, 5)
    with pytest.raises(ValueError, match="expected 5 group minima/ranges, got 5/4"):
        unpack_dequantize_triton(packed.payload, packed.mins, packed.ranges[:-1], None, x.shape, 2, 5)
    with pytest.raises(ValueError, match="layout is corrupt"):
        unpack_dequantize_triton(packed.payload, packed.mins, packed.ranges, torch.zeros(2), (25,), 2, 5)
    with pytest.raises(ValueError, match="variance-minimised levels need bits=2"):
        unpack_dequantize_triton(packed.payload, packed.mins, packed.ranges, None, x.shape, 4, 5, 1.0)


def test_mask_functions_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="mask must be a bool tensor, got torch.uint8"):
        pack_mask_triton(torch.ones(9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="a mask of 9 elements needs 2 bytes, got 1"):
        unpack_mask_triton(torch.zeros(1, dtype=torch.uint8), (9,))
    with pytest.raises(ValueError, match="packed must be a 1-D uint8 tensor"):
        unpack_mask_triton(torch.zeros(1, 2, dtype=torch.uint8), (9,))
    with pytest.raises(ValueError, match="packed must be a 1-D uint8 tensor"):
        unpack_mask_triton(torch.zeros(2, dtype=torch.int32), (9,))


def test_elementwise_ops_reject_bad_inputs() -> None:
    ints = torch.ones(9, dtype=torch.int32)
    mask = pack_mask_ref(torch.ones(9, dtype=torch.bool))
    for call in (lambda: relu_pack_triton(ints), lambda: dropout_pack_triton(ints, 0.5, SEED),
                 lambda: dropout_apply_triton(ints, 0.5, SEED), lambda: masked_scale_triton(ints, mask, 2.0)):
        with pytest.raises(ValueError, match="expected a float16, bfloat16 or float32 tensor, got torch.int32"):
            call()
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"dropout probability must lie in \[0, 1\]"):
            dropout_pack_triton(_randn(9), p, SEED)
        with pytest.raises(ValueError, match=r"dropout probability must lie in \[0, 1\]"):
            dropout_apply_triton(_randn(9), p, SEED)
    with pytest.raises(ValueError, match="a mask of 9 elements needs 2 bytes, got 1"):
        masked_scale_triton(_randn(9), mask[:1], 2.0)
