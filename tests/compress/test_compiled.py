"""The compiled torch backend (torch.compile / inductor) against the eager reference.

Every primitive must write the eager reference's bytes (quantize/pack, dequantize, masks), on shapes that take the
compiled loops and on shapes that fall back (short last group, raw fp32 tail, lengths that are not a multiple of 32).
The fused BatchNorm -> ReLU -> dropout forward must equal the composition of primitives byte for byte; its backward
sums in another order, so it must agree to fp32 rounding and be deterministic. Each distinct compile costs seconds:
the default suite compiles what a default GNN run uses (uniform INT2, stored dropout masks), the rest is ``slow``.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from packed_asserts import assert_same_packed, bits_of
from sustainml_exp.compress import backend as backend_module
from sustainml_exp.compress import compiled, quantize
from sustainml_exp.compress.activation import (
    BatchNormBackward,
    BatchNormForward,
    activation_backward,
    activation_forward,
)
from sustainml_exp.compress.backend import TORCH_BACKEND, Workload, resolve_backend
from sustainml_exp.compress.vm import optimal_inner_level
from sustainml_kernels.quant_ref import quantize_pack_ref, unpack_dequantize_ref

COMPILED = compiled.COMPILED_BACKEND


def _values(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * (torch.rand(shape[-1], generator=g) * 3 + 0.1) + torch.randn(shape[-1],
                                                                                                       generator=g)
    flat = x.view(-1)
    flat[::97] *= 8
    flat[5] = -0.0
    return x


def _check_quantize(shape: tuple[int, ...], bits: int, group_size: int, vm: bool, fp32_tail: bool) -> None:
    x = _values(shape, seed=group_size + shape[0])
    vm_a = optimal_inner_level(group_size) if vm else None
    for seed in (0, 0x0123456789ABCDEF):
        got = compiled.quantize_pack_compiled(x, bits, group_size, seed, vm_a, fp32_tail)
        want = quantize_pack_ref(x, bits, group_size, seed, vm_a, fp32_tail)
        assert_same_packed(got, want)
        decoded = compiled.unpack_dequantize_compiled(*got, shape, bits, group_size, vm_a)
        assert torch.equal(bits_of(decoded), bits_of(unpack_dequantize_ref(*want, shape, bits, group_size, vm_a)))


@pytest.mark.parametrize(("shape", "vm"), [((300, 16), False), pytest.param((300, 16), True, marks=pytest.mark.slow)],
                         ids=["uniform", "vm"])
def test_quantize_and_dequantize_write_the_reference_bytes(shape: tuple[int, ...], vm: bool) -> None:
    # 300 x 16 in groups of 64 rows: 4 full groups, then a short one of 44 rows (the eager steps, appended).
    _check_quantize(shape, 2, 64 * 16, vm, fp32_tail=False)


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "bits", "group_size", "vm", "fp32_tail"), [
    ((300, 16), 2, 1024, False, True),   # raw fp32 tail
    ((257, 128), 2, 128, False, False),  # one group per row (EXACT)
    ((257, 128), 2, 8192, True, False),  # BatchNorm-sized groups with VM
    ((1000,), 4, 64, False, False),
    ((1000,), 8, 32, False, True),
    ((77, 13), 2, 13, False, False),     # groups that end mid-word: the eager reference throughout
    ((5, 3), 2, 1024, True, False),      # no full group at all
])
def test_quantize_matrix_writes_the_reference_bytes(shape: tuple[int, ...], bits: int, group_size: int, vm: bool,
                                                    fp32_tail: bool) -> None:
    _check_quantize(shape, bits, group_size, vm, fp32_tail)


def _check_masks(shape: tuple[int, ...]) -> None:
    x = _values(shape, seed=3)
    relu, relu_mask = compiled.relu_pack_compiled(x)
    want_relu, want_relu_mask = backend_module._relu_pack_torch(x)
    assert torch.equal(bits_of(relu), bits_of(want_relu)) and torch.equal(relu_mask, want_relu_mask)
    for p in (0.5, 0.3):
        got, want = compiled.dropout_pack_compiled(x, p, 11), backend_module._dropout_pack_torch(x, p, 11)
        assert torch.equal(bits_of(got[0]), bits_of(want[0])) and torch.equal(got[1], want[1])
        assert torch.equal(bits_of(compiled.dropout_apply_compiled(x, p, 11)),
                           bits_of(backend_module._dropout_apply_torch(x, p, 11)))
        for scale in (1.0, 1 / (1 - p)):
            assert torch.equal(bits_of(compiled.masked_scale_compiled(x, relu_mask, scale)),
                               bits_of(backend_module._masked_scale_torch(x, relu_mask, scale)))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(37, 64), (37, 24)], ids=["compiled-loops", "fallback-lengths"])
def test_masks_write_the_reference_bytes(shape: tuple[int, ...]) -> None:
    _check_masks(shape)


def _activation_case(n: int, d: int, group_rows: int, seed: int = 0, vm: bool = False):
    y = _values((n, d), seed)
    g = torch.Generator().manual_seed(seed + 1)
    bn = BatchNormForward(y.mean(0), torch.rsqrt(y.var(0) + 1e-5), torch.rand(d, generator=g) + 0.5,
                          torch.randn(d, generator=g))
    grad = torch.randn(n, d, generator=g)
    q = quantize(y, 2, group_rows * d, vm=vm, seed=seed + 2, backend="torch")
    return y, bn, grad, q


@pytest.mark.parametrize(("lean", "vm"), [(False, False), pytest.param(True, False, marks=pytest.mark.slow),
                                          pytest.param(False, True, marks=pytest.mark.slow)],
                         ids=["stored-mask", "lean", "vm"])
def test_fused_activation_matches_the_composition_of_primitives(lean: bool, vm: bool) -> None:
    # 100 rows in BatchNorm groups of 8 rows: 12 full groups and a short one of 4 (its own compiled shape).
    y, bn, grad, q = _activation_case(100, 64, group_rows=8, vm=vm)
    outs = {}
    for backend in (TORCH_BACKEND, COMPILED):
        h, relu_mask, drop_mask = activation_forward(y.clone(), bn, 0.5, 9, lean, backend)
        bn_back = BatchNormBackward(q, bn.mean, bn.invstd, bn.weight)
        g, (grad_w, grad_b) = activation_backward(grad.clone(), relu_mask, drop_mask, 0.5, 9, lean, bn_back, 1 << 10,
                                                  backend)
        outs[backend.name] = (h, relu_mask, drop_mask, g, grad_w, grad_b)
    eager, fused = outs["torch"], outs["torch-compiled"]
    for got, want in zip(fused[:3], eager[:3]):  # the forward: same bytes
        assert (got is None) == (want is None)
        if want is not None:
            assert torch.equal(bits_of(got) if got.is_floating_point() else got,
                               bits_of(want) if want.is_floating_point() else want)
    for got, want in zip(fused[3:], eager[3:]):  # the backward: summed in another order
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_fused_backward_is_deterministic() -> None:
    y, bn, grad, q = _activation_case(100, 64, group_rows=8, seed=4)
    _, relu_mask, drop_mask = activation_forward(y.clone(), bn, 0.5, 9, False, COMPILED)
    bn_back = BatchNormBackward(q, bn.mean, bn.invstd, bn.weight)
    runs = [activation_backward(grad.clone(), relu_mask, drop_mask, 0.5, 9, False, bn_back, None, COMPILED)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


# --------------------------------------------------------------------------------------------- resolution


def _workload(values: int) -> Workload:
    return Workload(largest_values=values, quant_args=((2, 64 * 16, None, False),), dropout_p=0.5)


def test_auto_compiles_only_for_large_workloads(monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "_self_check", lambda *args: None)  # what is checked is tested above
    assert resolve_backend("auto", "cpu").name == "torch"
    assert resolve_backend("auto", "cpu", _workload(backend_module.COMPILE_MIN_VALUES - 1)).name == "torch"
    assert resolve_backend("auto", "cpu", _workload(backend_module.COMPILE_MIN_VALUES)).name == "torch-compiled"


def _failing_compiled() -> backend_module.Backend:
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    return dataclasses.replace(COMPILED, quantize_pack=no_compiler)


def test_auto_falls_back_to_eager_with_a_one_line_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(backend_module, "_compiled_backend", _failing_compiled)
    backend_module._warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        chosen = resolve_backend("auto", "cpu", _workload(backend_module.COMPILE_MIN_VALUES))
    assert chosen.name == "torch"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "no C++ compiler found" in warnings[0]


def test_explicit_compiled_backend_that_fails_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "_compiled_backend", _failing_compiled)
    with pytest.raises(ValueError, match="torch-compiled fails its self-check") as info:
        resolve_backend("torch-compiled", "cpu", _workload(10))
    assert "\n" not in str(info.value)


def test_compiled_backend_is_for_cpu_tensors() -> None:
    with pytest.raises(ValueError, match="torch-compiled compiles the reference for CPU tensors"):
        resolve_backend("torch-compiled", "cuda")
