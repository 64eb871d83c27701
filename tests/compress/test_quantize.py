"""quantize / dequantize / QTensor: unbiased stochastic rounding, exact byte counts, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from sustainml_exp.compress import CompressionSpec, QTensor, dequantize, effective_G_R, optimal_inner_level, quantize
from sustainml_kernels.quant_ref import pack_codes, unpack_codes

SEEDS = 2000


def _activations(n: int, group_size: int, seed: int) -> torch.Tensor:
    """Gaussian values with a different scale and offset per block, and a few outliers."""
    g = torch.Generator().manual_seed(seed)
    n_groups = -(-n // group_size)
    scale = torch.rand(n_groups, generator=g).repeat_interleave(group_size)[:n] * 3 + 0.1
    shift = torch.randn(n_groups, generator=g).repeat_interleave(group_size)[:n]
    x = torch.randn(n, generator=g) * scale + shift
    x[::97] *= 4
    return x


@pytest.mark.parametrize(("bits", "vm", "group_size", "n", "fp32_tail"), [
    (2, False, 16, 400, False),    # no ragged block
    (2, True, 16, 400, False),
    (2, False, 37, 400, False),    # ragged short block of 30
    (2, True, 37, 400, True),      # ragged block of 30 kept in fp32
    (2, True, 1024, 1500, False),  # short block of 476
    (4, False, 1024, 1500, True),
])
def test_stochastic_rounding_is_unbiased(bits: int, vm: bool, group_size: int, n: int, fp32_tail: bool) -> None:
    x = _activations(n, group_size, seed=group_size + n)
    total = torch.zeros(n, dtype=torch.float64)
    for s in range(SEEDS):
        total += dequantize(quantize(x, bits, group_size, vm=vm, seed=s, fp32_tail=fp32_tail))
    mean = total / SEEDS

    q = quantize(x, bits, group_size, vm=vm, seed=0, fp32_tail=fp32_tail)
    n_packed = n - (0 if q.tail is None else q.tail.numel())
    group_of = torch.arange(n_packed) // group_size
    levels = (0.0, q.vm_a, 3 - q.vm_a, 3.0) if vm else tuple(range(2**bits))
    widest_bin = max(b - a for a, b in zip(levels[:-1], levels[1:])) / (2**bits - 1)
    # SR variance is at most (bin width)^2 / 4, so the mean of SEEDS draws has std <= width / (2 sqrt(SEEDS)).
    std_bound = q.ranges.double()[group_of] * widest_bin / (2 * math.sqrt(SEEDS))
    err = mean[:n_packed] - x[:n_packed].double()
    assert float((err.abs() / std_bound).max()) < 5.0
    # Averaged over all values, a bias would add up while the noise cancels.
    assert abs(float((err / std_bound).mean())) < 5.0 / math.sqrt(n_packed)
    if fp32_tail and n_packed < n:
        assert torch.equal(mean[n_packed:].float(), x[n_packed:])


def test_the_unbiasedness_bound_sees_a_one_percent_bias() -> None:
    """Guards against a vacuous test: a bias of 1 % of a rounding step fails the averaged criterion above."""
    x = _activations(400, 16, seed=1)
    q = quantize(x, 2, 16, seed=0)
    step = q.ranges.double()[torch.arange(400) // 16] / 3
    err = 0.01 * step
    std_bound = step / (2 * math.sqrt(SEEDS))
    assert float((err / std_bound).mean()) > 5.0 / math.sqrt(400)


def test_same_seed_same_bytes() -> None:
    x = torch.randn(33, 31, generator=torch.Generator().manual_seed(0))
    a, b, c = (quantize(x, 2, 64, vm=True, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(s, t) for s, t in zip(a.tensors(), b.tensors()))
    assert not torch.equal(a.payload, c.payload)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_unpacked_codes_repack_to_the_payload(bits: int) -> None:
    x = torch.randn(1001, generator=torch.Generator().manual_seed(bits))
    q = quantize(x, bits, 100, seed=3)
    codes = unpack_codes(q.payload, bits, 1001)
    assert int(codes.max()) < 2**bits
    assert torch.equal(pack_codes(codes, bits), q.payload)


@pytest.mark.parametrize(("shape", "bits", "group_size", "fp32_tail", "expected"), [
    ((100, 37), 2, 64, False, 925 + 58 * 4),        # 3700 values = 57 blocks + a short block of 52
    ((100, 37), 2, 64, True, 912 + 57 * 4 + 52 * 4),  # the 52 leftover values kept in fp32
    ((3, 333), 4, 1000, False, 500 + 4),            # one short block: ceil(999 * 4 / 8) bytes
    ((3, 333), 4, 1000, True, 999 * 4),             # everything is tail
    ((5,), 8, 2, False, 5 + 3 * 4),
    ((64, 16), 2, 1024, True, 256 + 4),              # exactly one block, no tail
])
def test_nbytes_counts_payload_metadata_and_tail(shape: tuple[int, ...], bits: int, group_size: int,
                                                 fp32_tail: bool, expected: int) -> None:
    q = quantize(torch.randn(shape), bits, group_size, seed=0, fp32_tail=fp32_tail)
    assert q.nbytes == expected
    assert q.mins.dtype == q.ranges.dtype == torch.bfloat16 and q.payload.dtype == torch.uint8
    assert q.nbytes == sum(t.untyped_storage().nbytes() for t in q.tensors())  # no hidden, larger storages
    assert dequantize(q).shape == shape and dequantize(q).dtype == torch.float32


def test_tensors_round_trip_through_from_tensors() -> None:
    x = torch.randn(10, 13)
    for fp32_tail in (False, True):
        q = quantize(x, 2, 16, vm=True, seed=5, fp32_tail=fp32_tail)
        rebuilt = QTensor.from_tensors(q.tensors(), q.meta())
        assert torch.equal(dequantize(rebuilt), dequantize(q))
        assert rebuilt.meta() == q.meta() and rebuilt.nbytes == q.nbytes
    with pytest.raises(ValueError, match="tensors"):
        QTensor.from_tensors(q.tensors()[:2], q.meta())


def test_constant_blocks_dequantize_exactly() -> None:
    # bf16-representable constants: min and range (0) are stored exactly, so every draw returns the value.
    values = torch.tensor([0.0, 1.5, -3.25, 1024.0, 2.0**-10, -7.0])
    x = values.repeat_interleave(16)
    for vm in (False, True):
        for seed in range(5):
            assert torch.equal(dequantize(quantize(x, 2, 16, vm=vm, seed=seed)), x)


def test_constant_block_off_the_bf16_grid_stays_in_its_bracket() -> None:
    x = torch.full((64,), 0.1)
    q = quantize(x, 2, 64, seed=0)
    lo = float(q.mins[0])
    assert lo <= 0.1 <= lo + float(q.ranges[0]) and float(q.ranges[0]) < 0.1 * 2**-7
    mean = sum(dequantize(quantize(x, 2, 64, seed=s)).double().mean() for s in range(200)) / 200
    assert float(mean) == pytest.approx(0.1, abs=float(q.ranges[0]) * 0.1)


def test_vm_uses_the_optimal_inner_level() -> None:
    q = quantize(torch.randn(256), 2, 64, vm=True, seed=0)
    assert q.vm_a == optimal_inner_level(64)
    assert quantize(torch.randn(256), 2, 64, seed=0).vm_a is None


def test_quantize_rejects_bad_arguments() -> None:
    x = torch.randn(8)
    for kwargs, message in [({"bits": 3, "group_size": 4}, "bits=3"), ({"bits": 1, "group_size": 4}, "bits=1"),
                            ({"bits": 2, "group_size": 0}, "group_size"),
                            ({"bits": 4, "group_size": 4, "vm": True}, "vm=True needs bits=2")]:
        with pytest.raises(ValueError, match=message):
            quantize(x, seed=0, **kwargs)
    with pytest.raises(ValueError, match="floating"):
        quantize(torch.arange(8), 2, 4, seed=0)


def test_spec_block_shapes() -> None:
    spec = CompressionSpec(quant="block", G_R=64, group_cap=1024)
    assert spec.projected_dim(128) == 16 and spec.rows_per_group(16) == 64 and spec.group_size(16) == 1024
    assert spec.rows_per_group(128) == 8 and spec.rows_per_group(2000) == 1 and effective_G_R(spec, 128) == 8
    assert CompressionSpec(G_R=64).rows_per_group(128) == 64
    assert CompressionSpec(quant="exact", G_R=64).group_size(16) == 16
    assert CompressionSpec(kept_frac=0.1).projected_dim(100) == 10
    assert CompressionSpec(kept_frac=1.0).projected_dim(100) == 100
    assert CompressionSpec().enabled and not CompressionSpec(quant="fp32").enabled


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"quant": "int2"}, "quant="), ({"bits": 3}, "bits=3"), ({"kept_frac": 0.0}, "kept_frac"),
    ({"G_R": 0}, "G_R"), ({"vm": True, "bits": 4}, "vm=True"), ({"group_cap": 0}, "group_cap"),
])
def test_spec_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompressionSpec(**kwargs)
