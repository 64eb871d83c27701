"""Backend resolution: the Triton backend is used only where it reproduces the torch reference byte for byte."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from sustainml_exp.compress import backend as backend_module
from sustainml_kernels.quant_ref import rademacher_ref


def _broken_backend() -> backend_module.Backend:
    def off_by_one_payload(*args, **kwargs):
        packed = backend_module.quantize_pack_ref(*args, **kwargs)
        return packed._replace(payload=packed.payload ^ 1)

    return dataclasses.replace(backend_module.TORCH_BACKEND, name="triton", quantize_pack=off_by_one_payload)


def test_the_reference_passes_its_own_self_check() -> None:
    stand_in = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton")
    assert backend_module._self_check(stand_in, "cpu", None) is None


def test_a_backend_with_different_bytes_fails_the_self_check() -> None:
    problem = backend_module._self_check(_broken_backend(), "cpu", None)
    assert problem is not None and "quantize_pack" in problem


def test_explicit_triton_that_fails_its_self_check_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "_triton_backend", _broken_backend)
    monkeypatch.setattr(backend_module, "triton_usable", lambda device: True)
    with pytest.raises(ValueError, match="fail their self-check") as info:
        backend_module.resolve_backend("triton", "cpu")
    assert "\n" not in str(info.value)


def test_auto_falls_back_to_torch_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(backend_module, "_triton_backend", _broken_backend)
    monkeypatch.setattr(backend_module, "triton_usable", lambda device: True)
    backend_module._warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        # Without a GPU the self-check cannot even allocate its CUDA tensors: a failure like any other.
        chosen = backend_module.resolve_backend("auto", "cuda")
    assert chosen.name == "torch"
    assert "self-check" in caplog.text


def test_a_fused_projection_with_different_bytes_fails_the_self_check() -> None:
    def flipped_projection(*args, **kwargs):
        packed = backend_module.project_quantize_pack_ref(*args, **kwargs)
        return packed._replace(payload=packed.payload ^ 4)

    stand_in = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton",
                                   project_quantize_pack=flipped_projection)
    problem = backend_module._self_check(stand_in, "cpu", None)
    assert problem is not None and "project_quantize_pack" in problem


def test_the_triton_kernels_pass_the_self_check_in_the_interpreter() -> None:
    if not backend_module.triton_usable("cpu"):
        pytest.skip("triton is not installed here")
    triton_backend = backend_module.resolve_backend("triton", "cpu")
    assert triton_backend.name == "triton" and triton_backend.project_quantize_pack is not None


def _wrong_when(condition):
    """The reference quantize_pack, except that it flips a payload bit for the calls ``condition`` picks."""
    def quantize_pack(x, bits, group_size, *rest):
        packed = backend_module.quantize_pack_ref(x, bits, group_size, *rest)
        return packed._replace(payload=packed.payload ^ 1) if condition(x, bits, group_size) else packed

    return quantize_pack


@pytest.mark.parametrize(("what", "condition"), [
    ("looped", lambda x, bits, group_size: group_size > 4096),  # BatchNorm's G/R = 64 blocks
    ("general", lambda x, bits, group_size: group_size * bits % 8 != 0),  # groups ending mid-byte
    ("fp16", lambda x, bits, group_size: x.dtype == torch.float16),
    ("bf16", lambda x, bits, group_size: x.dtype == torch.bfloat16),
])
def test_the_self_check_covers_every_quantize_path_and_input_dtype(what: str, condition) -> None:
    stand_in = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton", quantize_pack=_wrong_when(condition))
    problem = backend_module._self_check(stand_in, "cpu", None)
    assert problem is not None and "quantize_pack" in problem, what


def test_the_self_check_covers_the_exact_projection_past_one_sign_word() -> None:
    def exact(x2d, r, *args):
        packed = backend_module.project_quantize_pack_ref(x2d, r, *args)
        return packed._replace(payload=packed.payload ^ 2) if r > 64 else packed

    stand_in = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton", project_quantize_pack_exact=exact)
    problem = backend_module._self_check(stand_in, "cpu", None)
    assert problem is not None and "(65," in problem and "exact" in problem


def test_the_self_check_accepts_a_rounding_difference_but_not_a_wrong_fast_projection() -> None:
    def fast(x2d, r, proj_seed, bits, group_size, seed, vm_a=None, fp32_tail=False, shift=0.0):
        # A blocked matmul, like the Triton fast path: bytes may differ from the sequential reference.
        projected = x2d.float() @ rademacher_ref(proj_seed, x2d.shape[1], r, device=x2d.device)
        return backend_module.quantize_pack_ref(projected + shift, bits, group_size, seed, vm_a, fp32_tail)

    good = dataclasses.replace(backend_module.TORCH_BACKEND, name="triton", project_quantize_pack=fast)
    assert backend_module._self_check(good, "cpu", None) is None
    shifted = dataclasses.replace(good, project_quantize_pack=lambda *a, **k: fast(*a, **k, shift=0.5))
    problem = backend_module._self_check(shifted, "cpu", None)
    assert problem is not None and "further from the reference projection" in problem
