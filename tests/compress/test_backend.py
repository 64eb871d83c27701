"""Backend resolution: the Triton backend is used only where it reproduces the torch reference byte for byte."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from sustainml_exp.compress import backend as backend_module


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
