"""sustainml_kernels.rp_triton and the projection references in quant_ref (kernels run under Triton's interpreter).

The fused kernel regenerates the Rademacher signs from ``proj_seed`` (the D x r matrix is never stored), projects an
N x D activation to N x r and quantizes and packs the projection in one pass; it must reproduce
``project_quantize_pack_ref`` byte for byte, and ``project_rademacher_triton`` must reproduce
``project_rademacher_ref`` bit for bit. Shapes stay small: every kernel runs on CPU in Triton's interpreter.
"""

import math

import pytest

pytest.importorskip("triton")

import torch  # noqa: E402

from packed_asserts import assert_same_packed, bits_of  # noqa: E402
from sustainml_exp.compress.vm import optimal_inner_level  # noqa: E402
from sustainml_kernels import rp_triton  # noqa: E402
from sustainml_kernels.quant_ref import (  # noqa: E402
    dequant_level_table,
    hash_uint32,
    project_quantize_pack_ref,
    project_rademacher_ref,
    quantize_pack_ref,
    rademacher_ref,
    substream_seed,
    unpack_dequantize_ref,
)
from sustainml_kernels.quant_triton import MAX_GROUP_TILE  # noqa: E402
from sustainml_kernels.rp_triton import (  # noqa: E402
    MAX_FUSED_R,
    fused_supported,
    project_quantize_pack_triton,
    project_rademacher_triton,
)

# The interpreter runs kernels in numpy, which warns about the NaN padding that min / max skip.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

PROJ_SEED = 0x0123456789ABCDEF  # both 32-bit halves non-zero, so the high seed word reaches the hash
SEED = 0xFEDCBA9876543210

# Flickr (spec gnn_blockquant.md): 500 input features, D/R = 8 -> R = ceil(500 / 8) = 63. EXACT keeps one group per
# node row (G = R = 63: 126 bits per INT2 group, not byte-aligned); block-wise G/R = 64 gives G = 4032 (fused).
FLICKR_R = math.ceil(500 / 8)
FLICKR_EXACT_G = FLICKR_R
FLICKR_BLOCK_G = 64 * FLICKR_R


def _activation(n: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Gaussian N x D values with per-column scales over two decades (groups get unequal ranges)."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, d) if d > 1 else torch.ones(1)
    return (torch.randn(n, d, generator=gen) * scales).to(dtype)


def _dequantize(packed, shape, bits, group_size, vm_a=None) -> torch.Tensor:
    return unpack_dequantize_ref(packed.payload, packed.mins, packed.ranges, packed.tail, shape, bits, group_size,
                                 vm_a)


def _bin_width(bits: int, vm_a: float | None) -> float:
    """Widest gap between adjacent dequantization levels, as a fraction of the group range."""
    table = dequant_level_table(bits, vm_a)
    return max(hi - lo for lo, hi in zip(table, table[1:]))


def _exact_projection(x: torch.Tensor, seed: int, r: int) -> torch.Tensor:
    """x @ rademacher_ref in float64 (the ideal value the fp32 projections round)."""
    return x.double() @ rademacher_ref(seed, x.shape[1], r, dtype=torch.float64)


# --------------------------------------------------------------------------------------------- rademacher_ref


@pytest.mark.parametrize("d,r", [(1, 1), (3, 5), (24, 63), (100, 64), (7, 100)])
def test_rademacher_entries_are_scaled_signs(d, r):
    m = rademacher_ref(PROJ_SEED, d, r)
    assert m.shape == (d, r) and m.dtype == torch.float32
    magnitude = torch.tensor(1.0 / math.sqrt(r), dtype=torch.float32)
    assert torch.equal(m.abs(), magnitude.expand(d, r))
    # entry (i, j) is negative iff bit (j & 31) of hash_uint32(seed, i * ceil(r / 32) + (j >> 5)) is set
    words = -(-r // 32)
    h = hash_uint32(PROJ_SEED, torch.arange(d * words))
    negative = [[(int(h[i * words + (j >> 5)]) >> (j & 31)) & 1 == 1 for j in range(r)] for i in range(d)]
    assert torch.equal(m < 0, torch.tensor(negative))


def test_rademacher_dtype_and_device_arguments():
    m64 = rademacher_ref(PROJ_SEED, 5, 7, device="cpu", dtype=torch.float64)
    assert m64.dtype == torch.float64 and m64.device.type == "cpu"
    assert torch.equal(torch.sign(m64), torch.sign(rademacher_ref(PROJ_SEED, 5, 7)).double())


def test_rademacher_deterministic_per_seed_and_distinct_across_seeds():
    a = rademacher_ref(PROJ_SEED, 64, 64)
    assert torch.equal(a, rademacher_ref(PROJ_SEED, 64, 64))
    # other seeds, including one that differs only in the high 32-bit word, give unrelated signs (about half agree)
    for other in (SEED, PROJ_SEED ^ (1 << 40), PROJ_SEED + 1):
        agree = (torch.sign(a) == torch.sign(rademacher_ref(other, 64, 64))).double().mean().item()
        assert 0.45 < agree < 0.55, (hex(other), agree)


def test_rademacher_signs_balanced():
    m = rademacher_ref(PROJ_SEED, 128, 64)
    negative = (m < 0).double()
    assert abs(negative.mean().item() - 0.5) < 0.02  # 8192 fair coins: sigma = 0.0055
    # per column too (128 coins each: sigma = 0.044)
    assert (negative.mean(dim=0) - 0.5).abs().max().item() < 0.2


def test_rademacher_second_moment_is_identity():
    """E[M M^T] = I (so x ~ (x M) M^T without bias): each row has norm 1 exactly up to fp32 rounding, and the
    off-diagonal entries (mean 0, sd 1/sqrt(r) per draw) vanish when averaged over seeds."""
    d, r, n_seeds = 8, 16, 256
    eye = torch.eye(d, dtype=torch.float64)
    mean = torch.zeros(d, d, dtype=torch.float64)
    for k in range(n_seeds):
        m = rademacher_ref(substream_seed(PROJ_SEED, k), d, r, dtype=torch.float64)
        gram = m @ m.T
        torch.testing.assert_close(gram.diagonal(), torch.ones(d, dtype=torch.float64))
        mean += gram / n_seeds
    off_diag = (mean - eye).abs().max().item()
    assert off_diag < 0.1  # sd of each averaged entry: 1 / sqrt(r * n_seeds) = 1/64


def test_rademacher_columns_nearly_orthogonal():
    d, r = 2048, 8
    m = rademacher_ref(PROJ_SEED, d, r, dtype=torch.float64)
    gram = m.T @ m
    torch.testing.assert_close(gram.diagonal(), torch.full((r,), d / r, dtype=torch.float64))
    cosines = gram / (d / r) - torch.eye(r, dtype=torch.float64)
    assert cosines.abs().max().item() < 0.12  # sd 1/sqrt(d) = 0.022


# --------------------------------------------------------------------------------------------- projection


PROJECTION_SHAPES = [  # (N, D, r): odd N, D not a power of two, r on both sides of MAX_FUSED_R
    (1, 3, 1),
    (7, 24, 5),
    (37, 100, 16),
    (7, 128, 63),
    (1, 24, 64),
    (37, 3, 65),
    (7, 24, 100),
]


@pytest.mark.parametrize("n,d,r", PROJECTION_SHAPES)
def test_project_ref_matches_matmul(n, d, r):
    x = _activation(n, d)
    got = project_rademacher_ref(x, PROJ_SEED, r)
    assert got.shape == (n, r) and got.dtype == torch.float32
    exact = _exact_projection(x, PROJ_SEED, r)
    torch.testing.assert_close(got, (x @ rademacher_ref(PROJ_SEED, d, r)), rtol=1e-5, atol=1e-5)
    # error bound of a D-term sequential fp32 sum plus the final scaling: (D + 1) u sum |x_d| / sqrt(r)
    bound = (d + 1) * 2.0**-24 * x.double().abs().sum(dim=1, keepdim=True) / math.sqrt(r) * 1.01
    assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("n,d,r", PROJECTION_SHAPES)
def test_project_triton_bit_exact(n, d, r):
    x = _activation(n, d, seed=n * 1000 + d)
    got = project_rademacher_triton(x, PROJ_SEED, r)
    ref = project_rademacher_ref(x, PROJ_SEED, r)
    assert got.shape == (n, r) and got.dtype == torch.float32
    assert torch.equal(bits_of(got), bits_of(ref))


@pytest.mark.parametrize("r", [16, 100], ids=["sign_word", "per_value_hash"])
def test_project_triton_multi_program(r):
    """More outputs than one program of the projection kernel handles (1024)."""
    x = _activation(80, 5, seed=3)
    assert torch.equal(bits_of(project_rademacher_triton(x, PROJ_SEED, r)),
                       bits_of(project_rademacher_ref(x, PROJ_SEED, r)))


@pytest.mark.parametrize("layout", ["transposed", "column_slice", "row_step"])
@pytest.mark.parametrize("r", [16, 65])
def test_project_triton_non_contiguous(layout, r):
    base = _activation(24, 24, seed=11)
    x = {"transposed": base.T, "column_slice": base[:, 3:20:2], "row_step": base[::3, 1:]}[layout]
    assert not x.is_contiguous()
    got = project_rademacher_triton(x, PROJ_SEED, r)
    assert torch.equal(bits_of(got), bits_of(project_rademacher_ref(x, PROJ_SEED, r)))
    assert torch.equal(bits_of(got), bits_of(project_rademacher_ref(x.contiguous(), PROJ_SEED, r)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("r", [5, 64, 100])
def test_project_low_precision_input(dtype, r):
    x = _activation(7, 24, dtype=dtype, seed=5)
    ref = project_rademacher_ref(x, PROJ_SEED, r)
    assert ref.dtype == torch.float32
    assert torch.equal(bits_of(ref), bits_of(project_rademacher_ref(x.float(), PROJ_SEED, r)))  # exact upcast
    got = project_rademacher_triton(x, PROJ_SEED, r)
    assert got.dtype == torch.float32
    assert torch.equal(bits_of(got), bits_of(ref))


@pytest.mark.parametrize("r", [5, 100])
def test_project_negative_zero(r):
    """The accumulator starts at +0.0, so -0.0 inputs (and all-zero rows) project to +0.0 in both."""
    x = _activation(6, 8, seed=2)
    x[0] = -0.0  # a whole row of -0.0
    x[1] = 0.0
    x[2, ::2] = -0.0  # -0.0 mixed with other values
    x[3] = torch.tensor([1.5, -1.5] * 4)  # cancellation: +-1.5 sums can end at exactly zero
    got = project_rademacher_triton(x, PROJ_SEED, r)
    ref = project_rademacher_ref(x, PROJ_SEED, r)
    assert torch.equal(bits_of(got), bits_of(ref))
    assert torch.equal(bits_of(got[:2]), torch.zeros(2, r, dtype=torch.int32))  # +0.0, never -0.0
    assert not torch.signbit(got[got == 0]).any()


def test_project_rows_independent_of_position():
    """Signs depend on (d, j) only: a row projects identically wherever it sits (the fp32 tail relies on it)."""
    x = _activation(9, 24, seed=4)
    full = project_rademacher_triton(x, PROJ_SEED, 7)
    assert torch.equal(bits_of(full[5:]), bits_of(project_rademacher_triton(x[5:], PROJ_SEED, 7)))
    assert torch.equal(bits_of(full[5:]), bits_of(project_rademacher_ref(x[5:], PROJ_SEED, 7)))


def test_project_seed_sensitivity():
    x = _activation(3, 16, seed=6)
    a = project_rademacher_triton(x, PROJ_SEED, 8)
    assert torch.equal(bits_of(a), bits_of(project_rademacher_triton(x, PROJ_SEED, 8)))  # deterministic
    high_word_only = PROJ_SEED ^ (1 << 40)
    b = project_rademacher_triton(x, high_word_only, 8)
    assert torch.equal(bits_of(b), bits_of(project_rademacher_ref(x, high_word_only, 8)))
    assert not torch.equal(a, b)


def test_project_empty_rows():
    x = torch.empty(0, 5)
    got = project_rademacher_triton(x, PROJ_SEED, 3)
    assert got.shape == (0, 3) and got.dtype == torch.float32
    assert project_rademacher_ref(x, PROJ_SEED, 3).shape == (0, 3)


# --------------------------------------------------------------------------------------------- fused_supported


def test_fused_limits():
    assert MAX_FUSED_R == 64  # the signs of one input column come from at most two hash words
    assert MAX_GROUP_TILE == 4096


@pytest.mark.parametrize("r,bits,group_size,expected", [
    (MAX_FUSED_R, 2, 64, True),
    (MAX_FUSED_R + 1, 2, 64, False),  # r past one sign word
    (1, 2, 4, True),
    (16, 2, 3, False),  # 6 bits per group: not byte-aligned
    (16, 8, 3, False),  # 24 bits: byte-aligned, but odd: noise pairs would straddle groups
    (16, 8, 4, True),
    (16, 4, 2, True),
    (16, 4, 3, False),
    (16, 1, 8, True),
    (16, 1, 12, False),
    (16, 2, MAX_GROUP_TILE, True),
    (16, 2, MAX_GROUP_TILE + 4, False),  # byte-aligned but wider than one tile
    (16, 8, MAX_GROUP_TILE + 1, False),
    (FLICKR_R, 2, FLICKR_EXACT_G, False),  # Flickr EXACT: G = R = 63, 126 bits
    (FLICKR_R, 2, FLICKR_BLOCK_G, True),  # Flickr block G/R = 64: G = 4032
])
def test_fused_supported_rule(r, bits, group_size, expected):
    assert fused_supported(r, bits, group_size) is expected
    assert expected == (r <= MAX_FUSED_R and group_size * bits % 8 == 0 and group_size % 2 == 0
                        and group_size <= MAX_GROUP_TILE)


# --------------------------------------------------------------------------------------------- fused quantization


QUANT_CASES = [  # (N, D, r, bits, group_size, vm, fp32_tail)
    # fused path
    pytest.param(7, 24, 5, 4, 20, False, False, id="fused-b4-g20-ragged"),
    pytest.param(7, 24, 5, 2, 24, False, True, id="fused-b2-g24-tail-mid-row"),
    pytest.param(37, 100, 16, 2, 64, False, False, id="fused-b2-g64-ragged"),
    pytest.param(37, 100, 16, 2, 64, False, True, id="fused-b2-g64-tail"),
    pytest.param(37, 7, 1, 8, 24, False, False, id="fused-r1-b8-g24"),
    pytest.param(9, 3, 63, 8, 4, False, False, id="fused-r63-b8-g4"),
    pytest.param(9, 3, 63, 8, 3, False, False, id="split-r63-b8-g3-odd"),
    pytest.param(7, 24, 16, 2, 20, True, False, id="fused-vm-g20-ragged"),
    pytest.param(7, 24, 16, 2, 20, True, True, id="fused-vm-g20-tail"),
    pytest.param(3, 24, 64, 1, 24, False, False, id="fused-r64-b1-g24"),
    pytest.param(1, 24, 64, 2, 96, False, False, id="fused-one-short-group"),
    pytest.param(1, 24, 64, 4, 96, False, True, id="fused-all-tail"),
    pytest.param(1, 24, 64, 8, 64, False, True, id="fused-n1-exact-group"),
    pytest.param(200, 3, 16, 4, 20, False, False, id="fused-multi-program"),
    pytest.param(65, 16, FLICKR_R, 2, FLICKR_BLOCK_G, False, False, id="fused-flickr-block-g4032"),
    pytest.param(65, 16, FLICKR_R, 2, FLICKR_BLOCK_G, True, True, id="fused-flickr-block-g4032-vm-tail"),
    # projection, then quantize_pack_triton
    pytest.param(5, 24, FLICKR_R, 2, FLICKR_EXACT_G, False, False, id="split-flickr-exact-g63"),
    pytest.param(5, 24, FLICKR_R, 2, FLICKR_EXACT_G, True, False, id="split-flickr-exact-g63-vm"),
    pytest.param(7, 24, 5, 2, 3, False, False, id="split-b2-g3"),
    pytest.param(7, 24, 5, 2, 3, True, True, id="split-vm-g3-tail"),
    pytest.param(7, 24, 5, 4, 3, False, True, id="split-b4-g3-tail"),
    pytest.param(7, 24, 65, 4, 64, False, False, id="split-r65-b4-g64"),
    pytest.param(5, 24, 100, 8, 24, False, True, id="split-r100-b8-g24-tail"),
    pytest.param(70, 3, 64, 2, MAX_GROUP_TILE + 8, False, False, id="split-group-wider-than-tile"),
]


def _vm_a(vm: bool, group_size: int) -> float | None:
    return optimal_inner_level(group_size) if vm else None


@pytest.mark.parametrize("n,d,r,bits,group_size,vm,fp32_tail", QUANT_CASES)
def test_project_quantize_pack_bit_exact(monkeypatch, n, d, r, bits, group_size, vm, fp32_tail):
    vm_a = _vm_a(vm, group_size)
    x = _activation(n, d, seed=n + d + r)
    # which path runs: quantize_pack_triton is called exactly when the fused kernel does not apply
    calls = []
    real_quantize = rp_triton.quantize_pack_triton
    monkeypatch.setattr(rp_triton, "quantize_pack_triton", lambda *a, **k: calls.append(1) or real_quantize(*a, **k))

    got = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, SEED, vm_a, fp32_tail)
    assert len(calls) == (0 if fused_supported(r, bits, group_size) else 1)
    ref = project_quantize_pack_ref(x, r, PROJ_SEED, bits, group_size, SEED, vm_a, fp32_tail)
    assert_same_packed(got, ref)

    numel = n * r
    n_full, rem = divmod(numel, group_size)
    tail_len = rem if fp32_tail else 0
    n_groups = n_full + (rem > 0 and not fp32_tail)
    assert got.mins.dtype == got.ranges.dtype == torch.bfloat16 and got.payload.dtype == torch.uint8
    assert got.mins.numel() == got.ranges.numel() == n_groups
    assert got.payload.numel() == -(-(numel - tail_len) * bits // 8)
    assert (got.tail is None) == (tail_len == 0)
    if tail_len:
        assert got.tail.dtype == torch.float32 and got.tail.numel() == tail_len
    # the reference composition it claims to be
    assert_same_packed(ref, quantize_pack_ref(project_rademacher_ref(x, PROJ_SEED, r), bits, group_size, SEED, vm_a,
                                              fp32_tail))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("r,bits,group_size", [(16, 2, 64), (16, 2, 3)], ids=["fused", "split"])
def test_project_quantize_pack_low_precision_input(dtype, r, bits, group_size):
    x = _activation(7, 24, dtype=dtype, seed=8)
    got = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, SEED, fp32_tail=True)
    assert_same_packed(got, project_quantize_pack_ref(x, r, PROJ_SEED, bits, group_size, SEED, fp32_tail=True))


@pytest.mark.parametrize("layout", ["transposed", "column_slice"])
@pytest.mark.parametrize("r,bits,group_size", [(16, 4, 20), (65, 4, 20)], ids=["fused", "split"])
def test_project_quantize_pack_non_contiguous(layout, r, bits, group_size):
    base = _activation(24, 24, seed=12)
    x = {"transposed": base[:, :9].T, "column_slice": base[1::2, 2:22:3]}[layout]
    assert not x.is_contiguous()
    got = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, SEED)
    assert_same_packed(got, project_quantize_pack_ref(x, r, PROJ_SEED, bits, group_size, SEED))
    assert_same_packed(got, project_quantize_pack_ref(x.contiguous(), r, PROJ_SEED, bits, group_size, SEED))


@pytest.mark.parametrize("fp32_tail", [False, True])
def test_project_quantize_pack_zero_input(fp32_tail):
    """A constant (all-zero, with -0.0) input: zero ranges are guarded, codes are 0, the tail holds +0.0."""
    x = torch.zeros(5, 8)
    x[::2] = -0.0
    got = project_quantize_pack_triton(x, 5, PROJ_SEED, 2, 8, SEED, fp32_tail=fp32_tail)
    assert_same_packed(got, project_quantize_pack_ref(x, 5, PROJ_SEED, 2, 8, SEED, fp32_tail=fp32_tail))
    assert not got.payload.any()
    assert torch.equal(bits_of(got.mins), torch.zeros_like(bits_of(got.mins)))
    assert torch.equal(bits_of(got.ranges), torch.zeros_like(bits_of(got.ranges)))
    if fp32_tail:
        assert torch.equal(bits_of(got.tail), torch.zeros(1, dtype=torch.int32))


@pytest.mark.parametrize("fp32_tail", [False, True])
@pytest.mark.parametrize("r,group_size", [(5, 20), (5, 3)], ids=["fused", "split"])
def test_project_quantize_pack_empty(r, group_size, fp32_tail):
    x = torch.empty(0, 6)
    got = project_quantize_pack_triton(x, r, PROJ_SEED, 2, group_size, SEED, fp32_tail=fp32_tail)
    ref = project_quantize_pack_ref(x, r, PROJ_SEED, 2, group_size, SEED, fp32_tail=fp32_tail)
    assert_same_packed(got, ref)
    assert got.payload.numel() == got.mins.numel() == got.ranges.numel() == 0 and got.tail is None


def test_project_quantize_pack_seeds():
    """Deterministic; the quantization seed moves only the codes, the projection seed everything."""
    x = _activation(7, 24, seed=9)
    a = project_quantize_pack_triton(x, 16, PROJ_SEED, 2, 16, SEED)
    assert_same_packed(a, project_quantize_pack_triton(x, 16, PROJ_SEED, 2, 16, SEED))
    other_noise = project_quantize_pack_triton(x, 16, PROJ_SEED, 2, 16, SEED ^ (1 << 33))
    assert_same_packed(other_noise, project_quantize_pack_ref(x, 16, PROJ_SEED, 2, 16, SEED ^ (1 << 33)))
    assert torch.equal(bits_of(other_noise.mins), bits_of(a.mins))
    assert torch.equal(bits_of(other_noise.ranges), bits_of(a.ranges))
    assert not torch.equal(other_noise.payload, a.payload)
    other_proj = project_quantize_pack_triton(x, 16, PROJ_SEED ^ (1 << 33), 2, 16, SEED)
    assert not torch.equal(bits_of(other_proj.mins), bits_of(a.mins))


# --------------------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("bits,group_size,vm,fp32_tail", [
    (2, 16, False, False),
    (2, 20, True, True),
    (4, 20, False, True),
    (8, 24, False, False),
    (2, 3, False, False),  # split path
])
def test_dequantized_within_one_bin_of_projection(bits, group_size, vm, fp32_tail):
    """Every dequantized value lies within one level gap (times its group's range) of x @ R."""
    n, d, r = 9, 24, 16
    vm_a = _vm_a(vm, group_size)
    x = _activation(n, d, seed=10)
    packed = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, SEED, vm_a, fp32_tail)
    approx = _dequantize(packed, (n, r), bits, group_size, vm_a).double().reshape(-1)
    exact = _exact_projection(x, PROJ_SEED, r).reshape(-1)
    n_packed = approx.numel() - (0 if packed.tail is None else packed.tail.numel())
    group_range = packed.ranges.double().repeat_interleave(group_size)[:n_packed]
    err = (approx[:n_packed] - exact[:n_packed]).abs()
    assert (err <= group_range * _bin_width(bits, vm_a) + 1e-4).all()
    # the quantization really is lossy at low precision, but far better than the value scale
    assert err.max().item() < 0.5 * exact.abs().max().item()
    if packed.tail is not None:  # the raw tail is the fp32 projection itself
        torch.testing.assert_close(approx[n_packed:], exact[n_packed:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vm", [False, True], ids=["uniform", "vm"])
def test_dequantized_mean_over_seeds_is_unbiased(vm):
    """Stochastic rounding is unbiased: averaged over quantization seeds, the fused output converges to x @ R."""
    n, d, r, bits, group_size, n_seeds = 4, 8, 16, 2, 16, 48
    vm_a = _vm_a(vm, group_size)
    x = _activation(n, d, seed=13)
    target = project_rademacher_ref(x, PROJ_SEED, r).double()
    width = None
    total = torch.zeros(n, r, dtype=torch.float64)
    single_errors = []
    for k in range(n_seeds):
        packed = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, substream_seed(SEED, k), vm_a)
        approx = _dequantize(packed, (n, r), bits, group_size, vm_a).double()
        total += approx
        single_errors.append((approx - target).pow(2).mean().sqrt().item())
        width = packed.ranges.double().repeat_interleave(group_size).view(n, r) * _bin_width(bits, vm_a)
    mean_err = (total / n_seeds - target).abs()
    # SR variance is at most width^2 / 4 per draw: 5 sd of the mean of n_seeds draws
    assert (mean_err <= 5 * width / (2 * math.sqrt(n_seeds)) + 1e-6).all()
    # and the average is much closer than a single draw (1/sqrt(48) ~ 0.14 expected)
    assert mean_err.pow(2).mean().sqrt().item() < 0.35 * (sum(single_errors) / n_seeds)


# --------------------------------------------------------------------------------------------- errors


BAD_PROJECTION_ARGS = [  # (x, r, message fragment)
    pytest.param(torch.ones(6), 3, "N x D", id="1d"),
    pytest.param(torch.ones(2, 3, 4), 3, "N x D", id="3d"),
    pytest.param(torch.ones(3, 0), 3, "D >= 1", id="d0"),
    pytest.param(torch.ones(3, 4), 0, "r >= 1", id="r0"),
    pytest.param(torch.ones(3, 4), -2, "r >= 1", id="r-negative"),
]


@pytest.mark.parametrize("x,r,message", BAD_PROJECTION_ARGS)
def test_projection_argument_errors(x, r, message):
    with pytest.raises(ValueError, match=message):
        project_rademacher_triton(x, PROJ_SEED, r)
    with pytest.raises(ValueError, match=message):
        project_quantize_pack_triton(x, r, PROJ_SEED, 2, 16, SEED)
    with pytest.raises(ValueError):
        project_rademacher_ref(x, PROJ_SEED, r)
    with pytest.raises(ValueError):
        project_quantize_pack_ref(x, r, PROJ_SEED, 2, 16, SEED)


@pytest.mark.parametrize("r", [2.0, True], ids=["float", "bool"])
def test_triton_rejects_non_integer_r(r):
    with pytest.raises(ValueError, match="integer r >= 1"):
        project_rademacher_triton(torch.ones(3, 4), PROJ_SEED, r)


def test_triton_rejects_integer_dtype():
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        project_rademacher_triton(torch.ones(3, 4, dtype=torch.int32), PROJ_SEED, 2)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        project_quantize_pack_triton(torch.ones(3, 4, dtype=torch.float64), 2, PROJ_SEED, 2, 16, SEED)


@pytest.mark.parametrize("d,r", [(0, 3), (3, 0)])
def test_rademacher_ref_rejects_empty(d, r):
    with pytest.raises(ValueError, match="d >= 1 and r >= 1"):
        rademacher_ref(PROJ_SEED, d, r)


@pytest.mark.parametrize("kwargs,message", [
    pytest.param({"bits": 3}, "bits=3 is not supported", id="bits3"),
    pytest.param({"bits": 0}, "bits=0 is not supported", id="bits0"),
    pytest.param({"bits": 16}, "bits=16 is not supported", id="bits16"),
    pytest.param({"group_size": 0}, "group_size must be an integer >= 1", id="group0"),
    pytest.param({"group_size": 2.5}, "group_size must be an integer >= 1", id="group-float"),
    pytest.param({"bits": 4, "vm_a": 1.0}, "need bits=2", id="vm-bits4"),
    pytest.param({"vm_a": 1.5}, r"vm_a must lie in \(0, 1.5\)", id="vm-a-high"),
    pytest.param({"vm_a": 0.0}, r"vm_a must lie in \(0, 1.5\)", id="vm-a-zero"),
])
@pytest.mark.parametrize("r", [16, 65], ids=["fused-r", "split-r"])
def test_quantization_argument_errors(kwargs, message, r):
    args = {"bits": 2, "group_size": 16, "vm_a": None, **kwargs}
    x = _activation(3, 4)
    with pytest.raises(ValueError, match=message):
        project_quantize_pack_triton(x, r, PROJ_SEED, args["bits"], args["group_size"], SEED, args["vm_a"])
    with pytest.raises(ValueError, match=message):
        project_quantize_pack_ref(x, r, PROJ_SEED, args["bits"], args["group_size"], SEED, args["vm_a"])


def test_quantization_errors_checked_before_input():
    with pytest.raises(ValueError, match="bits=3"):
        project_quantize_pack_triton(torch.ones(6), 0, PROJ_SEED, 3, 16, SEED)


@pytest.mark.parametrize("n,fp32_tail", [(0, False), (1, True)], ids=["no-rows", "all-tail"])
def test_invalid_vm_a_rejected_without_groups(n, fp32_tail):
    x = _activation(n, 4)  # n * 16 values < one group of 32: with fp32_tail they all stay raw
    with pytest.raises(ValueError, match="vm_a must lie"):
        project_quantize_pack_ref(x, 16, PROJ_SEED, 2, 32, SEED, 2.0, fp32_tail)
    with pytest.raises(ValueError, match="vm_a must lie"):
        project_quantize_pack_triton(x, 16, PROJ_SEED, 2, 32, SEED, 2.0, fp32_tail)


def test_cpu_without_interpreter_is_rejected(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = _activation(3, 4)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        project_rademacher_triton(x, PROJ_SEED, 2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        project_quantize_pack_triton(x, 2, PROJ_SEED, 2, 16, SEED)


# --------------------------------------------------------------------------------------------- fast path


FAST_CASES = [  # (N, D, r, bits, group_size, vm, fp32_tail): tl.dot kernel where dot_supported, else matmul + quantize
    pytest.param(37, 24, 16, 2, 16, False, False, id="dot-exact-rows"),
    pytest.param(70, 40, 16, 2, 64 * 16, True, True, id="dot-block-vm-tail"),
    pytest.param(37, 24, 32, 4, 4 * 32, False, False, id="dot-r32-b4"),
    pytest.param(9, 100, 64, 8, 64, False, True, id="dot-r64-b8-tail"),
    pytest.param(37, 24, FLICKR_R, 2, FLICKR_R, False, False, id="matmul-flickr-exact"),
    pytest.param(37, 24, 16, 2, 24, True, False, id="matmul-groups-across-rows"),
]


@pytest.mark.parametrize("n,d,r,bits,group_size,vm,fp32_tail", FAST_CASES)
def test_fast_path_matches_the_reference_to_fp32_rounding(n, d, r, bits, group_size, vm, fp32_tail):
    """Same layout; group metadata and every dequantized value within one level gap of the projection; the raw
    tail within fp32 rounding; and nearly all bytes equal to the sequential path's (only values whose projection
    rounds across a code boundary may differ)."""
    vm_a = _vm_a(vm, group_size)
    x = _activation(n, d, seed=n + r)
    assert rp_triton.dot_supported(r, group_size) == (r in (16, 32, 64) and group_size % r == 0
                                                      and math.log2(group_size // r).is_integer())
    fast = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, SEED, vm_a, fp32_tail, exact=False)
    ref = project_quantize_pack_ref(x, r, PROJ_SEED, bits, group_size, SEED, vm_a, fp32_tail)
    for got, want in zip(fast, ref):
        assert (got is None) == (want is None)
        if got is not None:
            assert got.dtype == want.dtype and got.shape == want.shape
    exact = _exact_projection(x, PROJ_SEED, r).reshape(-1)
    approx = _dequantize(fast, (n, r), bits, group_size, vm_a).double().reshape(-1)
    n_packed = approx.numel() - (0 if fast.tail is None else fast.tail.numel())
    group_range = fast.ranges.double().repeat_interleave(group_size)[:n_packed]
    assert ((approx[:n_packed] - exact[:n_packed]).abs() <= group_range * _bin_width(bits, vm_a) + 1e-4).all()
    torch.testing.assert_close(fast.ranges.double(), ref.ranges.double(), rtol=0.02, atol=1e-6)
    if fast.tail is not None:
        torch.testing.assert_close(fast.tail.double(), exact[n_packed:], rtol=1e-5, atol=1e-5)
    assert (fast.payload != ref.payload).double().mean().item() < 0.05


def test_dot_path_reads_low_precision_and_strided_inputs():
    x = _activation(40, 48, seed=21)
    want = project_quantize_pack_triton(x, 16, PROJ_SEED, 2, 64, SEED, exact=False)
    for variant in (x.T.contiguous().T, x.to(torch.bfloat16).float()):
        got = project_quantize_pack_triton(variant, 16, PROJ_SEED, 2, 64, SEED, exact=False)
        assert torch.equal(got.payload, project_quantize_pack_triton(variant.contiguous(), 16, PROJ_SEED, 2, 64, SEED,
                                                                      exact=False).payload)
    low = project_quantize_pack_triton(x.to(torch.bfloat16), 16, PROJ_SEED, 2, 64, SEED, exact=False)
    assert_same_packed(low, project_quantize_pack_triton(x.to(torch.bfloat16).float(), 16, PROJ_SEED, 2, 64, SEED,
                                                         exact=False))
    assert (want.payload != low.payload).double().mean().item() < 0.5  # bf16 rounding moves some codes


@pytest.mark.parametrize("r,group_size", [(16, 64), (FLICKR_R, FLICKR_R)], ids=["dot", "matmul"])
def test_fast_path_is_unbiased(r, group_size):
    """As torchao tests its kernels: averaged over quantization seeds, the dequantized fast-path output converges
    to the projection (within 5 standard errors of stochastic rounding), and far closer than one draw."""
    n, d, bits, n_seeds = 4, 24, 2, 48
    x = _activation(n, d, seed=22)
    target = _exact_projection(x, PROJ_SEED, r)
    total = torch.zeros(n, r, dtype=torch.float64)
    single = []
    width = None
    for k in range(n_seeds):
        packed = project_quantize_pack_triton(x, r, PROJ_SEED, bits, group_size, substream_seed(SEED, k),
                                              exact=False)
        approx = _dequantize(packed, (n, r), bits, group_size).double()
        total += approx
        single.append((approx - target).pow(2).mean().sqrt().item())
        width = packed.ranges.double().repeat_interleave(group_size)[: n * r].view(n, r) * _bin_width(bits, None)
    mean_err = (total / n_seeds - target).abs()
    assert (mean_err <= 5 * width / (2 * math.sqrt(n_seeds)) + 1e-5).all()
    assert mean_err.pow(2).mean().sqrt().item() < 0.35 * (sum(single) / n_seeds)
