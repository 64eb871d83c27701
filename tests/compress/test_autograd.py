"""Compressed autograd functions: exact forwards, unbiased gradients, and only compressed tensors saved."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from sustainml_exp.compress import (
    CompressionSpec,
    compressed_batch_norm,
    compressed_linear,
    dequantize,
    dequantize_row_chunks,
    dequantize_rows,
    dropout_bitmask,
    quantize,
    relu_bitmask,
    resolve_backend,
    row_chunk_alignment,
    spmm,
    triton_usable,
)
from sustainml_kernels.quant_ref import dropout_mask_ref


@contextmanager
def saved_tensors() -> Iterator[list[torch.Tensor]]:
    seen: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def _no_tensor_on_ctx(out: torch.Tensor) -> bool:
    """Custom Function ctx == grad_fn: every tensor it keeps must be a saved tensor, not an attribute."""
    return not any(isinstance(v, torch.Tensor) for v in vars(out.grad_fn).values())


def _rel_err(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return float((estimate - exact).norm() / exact.norm())


def _mean_gradient_errors(grad_of_seed: Callable[[int], torch.Tensor], exact: torch.Tensor, few: int,
                          many: int) -> tuple[float, float]:
    """Relative error of the gradient averaged over the first ``few`` and over ``many`` seeds."""
    total = torch.zeros_like(exact, dtype=torch.float64)
    err_few = math.nan
    for seed in range(many):
        total += grad_of_seed(seed)
        if seed + 1 == few:
            err_few = _rel_err(total / few, exact)
    return err_few, _rel_err(total / many, exact)


def _linear_inputs(n: int = 48, d: int = 32, o: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 2
    weight = torch.randn(o, d, generator=g) / math.sqrt(d)
    bias = torch.randn(o, generator=g)
    grad_out = torch.randn(n, o, generator=g)
    return x, weight, bias, grad_out


def test_linear_forward_and_input_gradient_are_exact() -> None:
    x, weight, bias, grad_out = _linear_inputs()
    spec = CompressionSpec(quant="block", G_R=4, kept_frac=0.25, vm=True)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = compressed_linear(*leaves, spec, seed=3)
    grads = torch.autograd.grad(out, leaves, grad_out)
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref_out = F.linear(*ref_leaves)
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, grad_out)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[2], ref_grads[2], rtol=1e-6, atol=1e-6)
    assert _no_tensor_on_ctx(out)


@pytest.mark.parametrize("spec", [
    CompressionSpec(quant="exact", kept_frac=0.5),
    CompressionSpec(quant="block", G_R=8, kept_frac=0.25, vm=True, store_rp_matrix=True),
    CompressionSpec(quant="block", G_R=5, kept_frac=1.0, fp32_tail=True),  # no projection, ragged fp32 tail
], ids=["exact-rp", "block-vm-stored-rp", "block-no-rp-tail"])
def test_linear_weight_gradient_is_unbiased(spec: CompressionSpec) -> None:
    x, weight, bias, grad_out = _linear_inputs()
    exact = (grad_out.t() @ x).double()
    w = weight.clone().requires_grad_()

    def grad_w(seed: int) -> torch.Tensor:
        out = compressed_linear(x, w, bias, spec, seed)
        return torch.autograd.grad(out, w, grad_out)[0].double()

    err_few, err_many = _mean_gradient_errors(grad_w, exact, few=32, many=512)
    assert err_many < 0.5 * err_few  # 16x the seeds: the error of an unbiased mean shrinks ~4x
    assert err_many < (0.15 if spec.kept_frac < 1 else 0.05)


def _batch_norm_case() -> tuple[torch.Tensor, ...]:
    n, d = 256, 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g) * (torch.rand(d, generator=g) + 0.5) + torch.randn(d, generator=g)
    weight, bias = torch.rand(d, generator=g) + 0.5, torch.randn(d, generator=g)
    return x, weight, bias, torch.randn(n, d, generator=g)


def test_batch_norm_forward_and_running_stats_match_torch() -> None:
    x, weight, bias, grad_out = _batch_norm_case()
    d = x.shape[1]
    ref_rm, ref_rv, rm, rv = torch.zeros(d), torch.ones(d), torch.zeros(d), torch.ones(d)
    ref_out = F.batch_norm(x, ref_rm, ref_rv, weight, bias, True, 0.1, 1e-5)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = compressed_batch_norm(leaves[0], rm, rv, leaves[1], leaves[2], 0.1, 1e-5, CompressionSpec(), seed=0)
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rm, ref_rm)
    torch.testing.assert_close(rv, ref_rv)
    assert _no_tensor_on_ctx(out)
    with pytest.raises(ValueError, match="N x D"):
        compressed_batch_norm(x.view(16, 16, 16), None, None, None, None, 0.1, 1e-5, CompressionSpec(), 0)


def _batch_norm_gradient_errors(spec: CompressionSpec, few: int, many: int) -> tuple[list[float], list[float]]:
    x, weight, bias, grad_out = _batch_norm_case()
    d = x.shape[1]
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref_out = F.batch_norm(ref_leaves[0], None, None, ref_leaves[1], ref_leaves[2], True, 0.1, 1e-5)
    exact = [t.double() for t in torch.autograd.grad(ref_out, ref_leaves, grad_out)]
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    totals = [torch.zeros_like(e) for e in exact]
    errors_few: list[float] = []
    for seed in range(many):
        out = compressed_batch_norm(leaves[0], torch.zeros(d), torch.ones(d), leaves[1], leaves[2], 0.1, 1e-5,
                                    spec, seed)
        for total, grad in zip(totals, torch.autograd.grad(out, leaves, grad_out)):
            total += grad.double()
        if seed + 1 == few:
            errors_few = [_rel_err(t / few, e) for t, e in zip(totals, exact)]
    return errors_few, [_rel_err(t / many, e) for t, e in zip(totals, exact)]


def test_batch_norm_int2_gradients() -> None:
    few, many = _batch_norm_gradient_errors(CompressionSpec(quant="block", G_R=4, vm=True), 32, 512)
    # grad_weight is linear in the saved input: unbiased, its error shrinks like 1/sqrt(seeds).
    assert many[1] < 0.5 * few[1] and many[1] < 0.06
    assert many[2] < 1e-6  # grad_bias does not use the saved input
    # grad_input is quadratic in the saved input, so rounding noise leaves a bias of order
    # Var(noise) / (N Var(x)) (here < 1 %): the error shrinks with seeds only down to that floor.
    assert many[0] < few[0] and many[0] < 0.02


def test_batch_norm_int8_input_gradient_converges() -> None:
    few, many = _batch_norm_gradient_errors(CompressionSpec(quant="exact", bits=8), 16, 256)
    assert many[0] < 0.5 * few[0] and many[0] < 1e-3
    assert many[1] < 0.5 * few[1] and many[1] < 2e-3


def test_linear_saves_only_the_compressed_projection() -> None:
    n, d, o = 200, 64, 10
    x = torch.randn(n, d, requires_grad=True)
    weight, bias = torch.randn(o, d, requires_grad=True), torch.randn(o, requires_grad=True)
    spec = CompressionSpec(quant="block", G_R=16, kept_frac=0.125, group_cap=1024, fp32_tail=True)
    with saved_tensors() as saved:
        out = compressed_linear(x, weight, bias, spec, seed=1)
    activations = [t for t in saved if t is not weight]
    assert not any(t.dtype.is_floating_point and t.numel() == n * d for t in saved)
    # R = 8 columns, 16 rows per block -> 128 values per block; 1600 values = 12 blocks + 64 raw fp32 values.
    expected = [(torch.uint8, 12 * 128 * 2 // 8), (torch.bfloat16, 12), (torch.bfloat16, 12), (torch.float32, 64)]
    assert sorted(((t.dtype, t.numel()) for t in activations), key=str) == sorted(expected, key=str)
    out.sum().backward()

    stored = CompressionSpec(quant="exact", kept_frac=0.125, store_rp_matrix=True)
    with saved_tensors() as saved:
        compressed_linear(x, weight, bias, stored, seed=1)
    floats = [tuple(t.shape) for t in saved if t is not weight and t.dtype == torch.float32]
    assert floats == [(d, stored.projected_dim(d))]  # the projection matrix, nothing N x D


def test_batch_norm_relu_dropout_save_no_float_activation() -> None:
    n, d = 64, 32
    x = torch.randn(n, d, requires_grad=True)
    bn = torch.nn.BatchNorm1d(d)
    spec = CompressionSpec(quant="block", G_R=8)
    with saved_tensors() as saved:
        h = compressed_batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, 0.1, 1e-5, spec, 2)
        h = dropout_bitmask(relu_bitmask(h), 0.5, seed=4)
    assert not any(t.dtype.is_floating_point and t.numel() == n * d for t in saved)
    params = {id(bn.weight)}
    extra = [t for t in saved if id(t) not in params and t.dtype == torch.float32]
    assert [tuple(t.shape) for t in extra] == [(d,), (d,)]  # batch mean and inverse std
    masks = [t for t in saved if t.dtype == torch.uint8]
    assert sorted(t.numel() for t in masks) == [n * d // 8, n * d // 8, n * d * 2 // 8]
    h.sum().backward()
    assert x.grad is not None and bn.weight.grad is not None


def test_dropout_is_reproducible_and_backward_uses_the_same_mask() -> None:
    x = torch.rand(30, 40) + 0.5
    leaf = x.clone().requires_grad_()
    out = dropout_bitmask(leaf, 0.3, seed=8)
    keep = dropout_mask_ref(8, x.shape, 0.3)
    torch.testing.assert_close(out, torch.where(keep, x / 0.7, 0.0))
    assert torch.equal(out, dropout_bitmask(x, 0.3, seed=8))
    assert not torch.equal(out, dropout_bitmask(x, 0.3, seed=9))
    (grad,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
    torch.testing.assert_close(grad, keep.float() / 0.7)
    assert torch.equal(grad != 0, out != 0)
    assert _no_tensor_on_ctx(out)
    assert dropout_bitmask(x, 0.0, seed=8) is x
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_bitmask(x, 1.5, seed=8)


def test_relu_bitmask_matches_relu() -> None:
    x = torch.randn(13, 7)
    leaf, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = relu_bitmask(leaf)
    assert torch.equal(out, torch.relu(x))
    g = torch.randn(13, 7)
    assert torch.equal(torch.autograd.grad(out, leaf, g)[0], torch.autograd.grad(torch.relu(ref), ref, g)[0])


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_spmm_matches_dense_and_saves_only_the_adjacency() -> None:
    n = 40
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(n, n, generator=g) < 0.1).float() * torch.rand(n, n, generator=g)
    adj, adj_t = dense.to_sparse_csr(), dense.t().contiguous().to_sparse_csr()
    x = torch.randn(n, 5, requires_grad=True)
    with saved_tensors() as saved:
        out = spmm(adj, adj_t, x)
    assert all(t.layout == torch.sparse_csr for t in saved)
    torch.testing.assert_close(out, dense @ x.detach())
    grad_out = torch.randn(n, 5)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad_out)[0], dense.t() @ grad_out)


def test_disabled_spec_falls_back_to_plain_ops() -> None:
    x, weight, bias, _ = _linear_inputs()
    spec = CompressionSpec(quant="fp32")
    torch.testing.assert_close(compressed_linear(x, weight, bias, spec, 0), F.linear(x, weight, bias))


@pytest.mark.parametrize("spec", [
    CompressionSpec(quant="block", G_R=3, kept_frac=0.25),  # 8 columns, 24-value blocks, short last block
    CompressionSpec(quant="exact", kept_frac=0.25, vm=True, store_rp_matrix=True),
    CompressionSpec(quant="block", G_R=5, kept_frac=1.0, fp32_tail=True),  # no projection, ragged fp32 tail
], ids=["block-short-block", "exact-vm-stored-rp", "block-no-rp-tail"])
def test_chunked_weight_gradient_matches_unchunked(spec: CompressionSpec) -> None:
    x, weight, bias, grad_out = _linear_inputs(n=203)  # 203 rows: the last chunk is short
    w = weight.clone().requires_grad_()
    chunked = dataclasses.replace(spec, grad_chunk_values=48)  # a few aligned row units per chunk
    whole = dataclasses.replace(spec, grad_chunk_values=None)
    grads = [torch.autograd.grad(compressed_linear(x, w, bias, s, seed=5), w, grad_out)[0] for s in (chunked, whole)]
    # Only the fp32 summation order differs: a few ulps of the gradient's scale (entries reach ~100 here).
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6 * float(grads[1].abs().max()))


def test_dequantize_row_chunks_cover_the_tensor_in_aligned_pieces() -> None:
    g = torch.Generator().manual_seed(3)
    for shape, group_size, bits, fp32_tail in [((203, 8), 24, 2, False), ((101, 6), 30, 2, True),
                                               ((77, 3), 3, 4, False), ((51, 16), 16, 8, True)]:
        q = quantize(torch.randn(shape, generator=g), bits, group_size, seed=1, fp32_tail=fp32_tail)
        align = row_chunk_alignment(q)
        pieces = list(dequantize_row_chunks(q, 2 * align * shape[1] + 1))
        assert len(pieces) > 2 and pieces[-1][1] - pieces[-1][0] < pieces[0][1] - pieces[0][0]
        assert all(start % align == 0 for start, _, _ in pieces)
        assert [stop for _, stop, _ in pieces[:-1]] == [start for start, _, _ in pieces[1:]]
        assert torch.equal(torch.cat([piece for _, _, piece in pieces]), dequantize(q))
    with pytest.raises(ValueError, match="multiple of"):
        dequantize_rows(quantize(torch.randn(40, 8), 2, 24, seed=0), 1, 5)


def test_lean_dropout_saves_nothing_and_gives_the_same_gradient() -> None:
    x = torch.randn(30, 40)
    lean = CompressionSpec(lean=True)
    results = []
    for spec in (None, lean):
        leaf = x.clone().requires_grad_()
        with saved_tensors() as saved:
            out = dropout_bitmask(leaf, 0.4, seed=11, spec=spec)
        results.append((out, torch.autograd.grad(out, leaf, torch.arange(1200.0).view(30, 40))[0], len(saved)))
    assert results[1][2] == 0 and results[0][2] == 1
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_backend_choice_is_validated_and_torch_is_always_available() -> None:
    assert resolve_backend("auto", "cpu").name == "torch"
    assert resolve_backend("torch", "cpu").name == "torch"
    with pytest.raises(ValueError, match="compress_backend='cuda' is not allowed; allowed: auto, torch, "
                                         "torch-compiled, triton"):
        resolve_backend("cuda", "cpu")
    with pytest.raises(ValueError, match="backend='cuda' is not allowed"):
        CompressionSpec(backend="cuda")
    x = torch.randn(64, 8)
    q_auto, q_torch = quantize(x, 2, 16, seed=3), quantize(x, 2, 16, seed=3, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(q_auto.tensors(), q_torch.tensors()))
    assert torch.equal(dequantize(q_auto), dequantize(q_torch, backend="torch"))


def test_triton_backend_on_cpu_without_the_interpreter_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="compress_backend=triton") as info:
        resolve_backend("triton", "cpu")
    assert "\n" not in str(info.value) and "allowed here: auto, torch" in str(info.value)


def test_triton_linear_uses_the_fused_projection(monkeypatch) -> None:
    """Dispatch only (the kernels are tested elsewhere): a stand-in 'triton' backend whose fused projection is
    the torch reference must be called once and store the same bytes as the torch path."""
    from sustainml_exp.compress import backend as backend_module
    from sustainml_kernels.quant_ref import quantize_pack_ref, rademacher_ref

    calls = []

    def fused(x2d, r, proj_seed, bits, group_size, seed, vm_a=None, fp32_tail=False):
        calls.append((tuple(x2d.shape), r))
        projected = x2d.float() @ rademacher_ref(proj_seed, x2d.shape[1], r, device=x2d.device)
        return quantize_pack_ref(projected, bits, group_size, seed, vm_a, fp32_tail)

    stand_in = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton", project_quantize_pack=fused)
    monkeypatch.setattr(backend_module, "_triton_backend", lambda: stand_in)
    monkeypatch.setattr(backend_module, "triton_usable", lambda device: True)
    monkeypatch.setattr(backend_module, "_self_check", lambda *args: None)  # its own calls would count here
    x, weight, bias, grad_out = _linear_inputs()
    w = weight.clone().requires_grad_()
    stored = {}
    for name in ("torch", "triton"):
        with saved_tensors() as saved:
            out = compressed_linear(x, w, bias, CompressionSpec(G_R=4, kept_frac=0.25, backend=name), seed=2)
        stored[name] = [t for t in saved if t is not w]
        torch.autograd.grad(out, w, grad_out)
    assert calls == [((48, 32), 8)]
    assert all(torch.equal(a, b) for a, b in zip(stored["torch"], stored["triton"], strict=True))


@pytest.mark.skipif(not triton_usable("cpu"), reason="needs triton and TRITON_INTERPRET=1 (set in tests/conftest.py)")
@pytest.mark.parametrize("linear_spec", [
    dict(kept_frac=1.0),  # no projection
    dict(kept_frac=0.25, store_rp_matrix=True),  # projection by the same matmul on both backends
], ids=["no-rp", "stored-rp"])
def test_triton_interpreter_matches_torch_bit_for_bit(linear_spec: dict) -> None:
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(64, 32, generator=g), torch.randn(8, 32, generator=g), torch.randn(8, generator=g)
    grad_out, bn_in = torch.randn(64, 8, generator=g), torch.randn(64, 16, generator=g)
    results = {}
    for name in ("torch", "triton"):
        spec = CompressionSpec(G_R=4, vm=True, backend=name, grad_chunk_values=64, **linear_spec)
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = compressed_linear(*leaves, spec, seed=3)
        linear_grads = torch.autograd.grad(out, leaves, grad_out)
        h = bn_in.clone().requires_grad_()
        bn = torch.nn.BatchNorm1d(16)
        y = compressed_batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, 0.1, 1e-5, spec, 4)
        y = dropout_bitmask(relu_bitmask(y, spec), 0.5, 7, spec)
        y = dropout_bitmask(relu_bitmask(y, spec), 0.5, 8, dataclasses.replace(spec, lean=True))
        results[name] = (out, *linear_grads, y.detach(), *torch.autograd.grad(y.sum(), (h, bn.weight)))
    assert all(torch.equal(a, b) for a, b in zip(results["torch"], results["triton"], strict=True))
