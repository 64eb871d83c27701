"""Which implementation packs and unpacks compressed activations: the pure-torch reference (eager, or compiled by
torch.compile into fused CPU loops) or the Triton kernels.

All backends produce the same bit layout (``sustainml_kernels.quant_ref`` defines it), so a tensor packed by one
can be unpacked by another. ``resolve_backend`` turns the user's choice (auto | torch | torch-compiled | triton) into
a ``Backend`` for the device of the tensors at hand. The Triton and compiled modules are imported only when asked
for, so the torch backend works where Triton, a C++ compiler or the kernel modules are missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import torch

from sustainml_exp.compress.spec import COMPRESS_BACKENDS
from sustainml_kernels.quant_ref import (
    dequant_level_table,
    dropout_mask_ref,
    pack_mask_ref,
    project_quantize_pack_ref,
    project_rademacher_ref,
    quantize_pack_ref,
    unpack_dequantize_ref,
    unpack_mask_ref,
)

__all__ = ["COMPILE_MIN_VALUES", "COMPRESS_BACKENDS", "ActivationCheck", "Backend", "Workload", "resolve_backend",
           "triton_usable"]

log = logging.getLogger("sustainml_exp")

# auto compiles the torch backend on CPU only for runs whose largest compressed tensor has at least this many values:
# compiling takes tens of seconds (seconds with inductor's on-disk cache), which a 3,000-node graph never earns back
# and an arxiv-sized one (21.7M values per hidden activation) earns back in its first epoch.
COMPILE_MIN_VALUES = 1 << 22


@dataclass(frozen=True)
class Backend:
    """The packing primitives of one implementation (signatures of ``sustainml_kernels.quant_triton``).

    project_quantize_pack: the fused Rademacher projection + quantize + pack, or None where the backend has none
    (callers then project with a matmul and call ``quantize_pack``). Its projection may sum in any order (a
    blocked matmul, like the torch path's), so its bytes match the reference only up to fp32 rounding.
    project_quantize_pack_exact: the same op summing in ``project_rademacher_ref``'s order, byte-identical to
    ``project_quantize_pack_ref`` (the self-check compares it), or None.
    """

    name: str
    quantize_pack: Callable[..., Any]
    unpack_dequantize: Callable[..., torch.Tensor]
    pack_mask: Callable[[torch.Tensor], torch.Tensor]
    unpack_mask: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]
    relu_pack: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    dropout_pack: Callable[[torch.Tensor, float, int], tuple[torch.Tensor, torch.Tensor]]
    dropout_apply: Callable[[torch.Tensor, float, int], torch.Tensor]
    masked_scale: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    project_quantize_pack: Callable[..., Any] | None
    project_quantize_pack_exact: Callable[..., Any] | None = None


# --------------------------------------------------------------------------------------------- torch


def dropout_scale(p: float) -> float:
    """Factor applied to kept elements: 1 / (1 - p), and 0 for p = 1 (everything dropped)."""
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _keep_scaled(t: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.where(keep, t * scale, torch.zeros((), dtype=t.dtype, device=t.device))


def _relu_pack_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.relu(x), pack_mask_ref(x > 0)


def _dropout_pack_torch(x: torch.Tensor, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = dropout_mask_ref(seed, tuple(x.shape), p, device=x.device)
    return _keep_scaled(x, keep, dropout_scale(p)), pack_mask_ref(keep)


def _dropout_apply_torch(t: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    return _keep_scaled(t, dropout_mask_ref(seed, tuple(t.shape), p, device=t.device), dropout_scale(p))


def _masked_scale_torch(t: torch.Tensor, packed: torch.Tensor, scale: float) -> torch.Tensor:
    return _keep_scaled(t, unpack_mask_ref(packed, tuple(t.shape)), scale)


TORCH_BACKEND = Backend(
    name="torch",
    quantize_pack=quantize_pack_ref,
    unpack_dequantize=unpack_dequantize_ref,
    pack_mask=pack_mask_ref,
    unpack_mask=unpack_mask_ref,
    relu_pack=_relu_pack_torch,
    dropout_pack=_dropout_pack_torch,
    dropout_apply=_dropout_apply_torch,
    masked_scale=_masked_scale_torch,
    project_quantize_pack=None,
    project_quantize_pack_exact=project_quantize_pack_ref,
)


# --------------------------------------------------------------------------------------------- triton


@lru_cache(maxsize=1)
def _triton_backend() -> Backend:
    from sustainml_kernels import quant_triton as qt

    try:
        from sustainml_kernels.rp_triton import project_quantize_pack_triton
    except ImportError:  # the fused projection is an optimisation: fall back to matmul + quantize_pack
        project_quantize_pack = project_quantize_pack_exact = None
    else:
        # Training takes the fast path (a blocked fp32 matmul, as the torch backend's projection is); the
        # sequential exact kernel reproduces project_quantize_pack_ref and is what the self-check compares bytes of.
        project_quantize_pack = partial(project_quantize_pack_triton, exact=False)
        project_quantize_pack_exact = partial(project_quantize_pack_triton, exact=True)
    return Backend(
        name="triton",
        quantize_pack=qt.quantize_pack_triton,
        unpack_dequantize=qt.unpack_dequantize_triton,
        pack_mask=qt.pack_mask_triton,
        unpack_mask=qt.unpack_mask_triton,
        relu_pack=qt.relu_pack_triton,
        dropout_pack=qt.dropout_pack_triton,
        dropout_apply=qt.dropout_apply_triton,
        masked_scale=qt.masked_scale_triton,
        project_quantize_pack=project_quantize_pack,
        project_quantize_pack_exact=project_quantize_pack_exact,
    )


def _triton_import_error() -> str | None:
    """Why the Triton kernels cannot be loaded here, or None when they can."""
    try:
        _triton_backend()
    except ImportError as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    from sustainml_kernels import quant_triton

    # The kernel module stays importable without triton and then reports itself unusable everywhere.
    return None if getattr(quant_triton, "TRITON_AVAILABLE", True) else "triton is not installed"


@lru_cache(maxsize=16)
def _triton_usable_cached(device_type: str, device_index: int | None, interpret: str | None) -> bool:
    if _triton_import_error() is not None:
        return False
    from sustainml_kernels.quant_triton import triton_usable as kernels_usable

    return bool(kernels_usable(torch.device(device_type, device_index)))


def triton_usable(device: torch.device | str) -> bool:
    """True when the Triton kernels import and run on ``device`` (CUDA, or CPU under TRITON_INTERPRET=1)."""
    device = torch.device(device)
    # The interpreter flag is part of the key: it decides CPU usability and tests flip it.
    return _triton_usable_cached(device.type, device.index, os.environ.get("TRITON_INTERPRET"))


# --------------------------------------------------------------------------------------------- resolution


def _mismatch(name: str, got: Any, want: Any) -> str | None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want, strict=True):
        if a is None and b is None:
            continue
        if a is None or b is None or a.dtype != b.dtype or not torch.equal(a.cpu(), b.cpu()):
            return f"{name} differs from the torch reference"
    return None


# (bits, group_size, seed, vm_a, fp32_tail) on the self-check's 37 x 24 tensor: fused row tiles with a ragged
# last group, VM levels with a raw tail, 4-bit, and the general path (groups ending mid-byte).
_SELF_CHECK_QUANTIZE = ((2, 96, 7, None, False), (2, 96, 7, 1.1, True), (4, 24, 8, None, False), (2, 7, 9, None, False))
_LOOPED_GROUP = 8192  # BatchNorm's block at G/R = 64 on 128 features: wider than a register tile, so looped
# (r, proj_seed, bits, group_size, seed): a ragged last group; r past one sign word; r of the tl.dot fast path.
_SELF_CHECK_PROJECTIONS = ((5, 11, 2, 20, 3), (65, 11, 2, 65, 3), (16, 11, 2, 64, 3))
_SELF_CHECK_DROPOUT_P = 0.3
# quantize_pack arguments (bits, group_size, vm_a, fp32_tail) of a run (``Workload``): checked on top of the cases
# above, so that a compiled backend is checked, and compiled, exactly where it will run.
QuantArgs = tuple[int, int, "float | None", bool]


@dataclass(frozen=True)
class ActivationCheck:
    """The BatchNorm -> ReLU -> dropout a run applies (``compress.activation``), to check on ``rows`` x ``width``
    values: its BatchNorm input's quantize_pack arguments, dropout probability and lean flag."""

    rows: int
    width: int
    quant_args: QuantArgs
    dropout_p: float
    lean: bool


@dataclass(frozen=True)
class Workload:
    """What a run will compress: its largest compressed tensor (values), the quantize_pack arguments and dropout
    probability it will use, and its activation layers. ``resolve_backend`` checks a backend on exactly these (for
    a compiled backend that also compiles what the run needs, before its first epoch), and auto picks by size."""

    largest_values: int
    quant_args: tuple[QuantArgs, ...]
    dropout_p: float
    activation: ActivationCheck | None = None


def _quantize_problem(backend: Backend, x: torch.Tensor, args: tuple) -> str | None:
    got, want = backend.quantize_pack(x, *args), quantize_pack_ref(x, *args)
    problem = _mismatch(f"quantize_pack{args} on {x.dtype}", tuple(got), tuple(want))
    if problem is None:
        shape, (bits, group_size, _, vm_a, _) = tuple(x.shape), args
        problem = _mismatch("unpack_dequantize", backend.unpack_dequantize(*got, shape, bits, group_size, vm_a),
                            unpack_dequantize_ref(*want, shape, bits, group_size, vm_a))
    return problem


def fast_projection_problem(packed: Any, x: torch.Tensor, args: tuple) -> str | None:
    """For a projection that may round differently from the reference (``args`` as project_quantize_pack_ref's
    after x): None when every dequantized value lies within one level gap of the reference projection (plus fp32
    slack) and the group ranges within 2 % of the reference's, else what is wrong."""
    r, proj_seed, bits, group_size, seed, vm_a, fp32_tail = (*args, None, False)[:7]
    want = project_quantize_pack_ref(x, *args)
    projection = project_rademacher_ref(x, proj_seed, r).reshape(-1)
    decoded = unpack_dequantize_ref(*packed, (x.shape[0], r), bits, group_size, vm_a).reshape(-1)
    n_packed = decoded.numel() - (0 if packed.tail is None else packed.tail.numel())
    levels = dequant_level_table(bits, vm_a)
    gap = max(b - a for a, b in zip(levels, levels[1:]))
    reach = packed.ranges.float().repeat_interleave(group_size)[:n_packed] * gap * 1.001
    slack = 1e-5 * (1 + projection.abs())
    if (packed.ranges.shape != want.ranges.shape
            or not torch.allclose(packed.ranges.float(), want.ranges.float(), rtol=0.02, atol=1e-6)
            or not bool(((decoded - projection).abs() <= torch.cat([reach, torch.zeros_like(slack[n_packed:])])
                         + slack).all())):
        return f"project_quantize_pack{args} is further from the reference projection than one level"
    return None


@lru_cache(maxsize=16)
def _self_check(backend: Backend, device_type: str, device_index: int | None, quant_args: tuple[QuantArgs, ...] = (),
                dropout_p: float = _SELF_CHECK_DROPOUT_P, activation: ActivationCheck | None = None) -> str | None:
    """None when ``backend`` reproduces the torch reference on this device, else why not: byte for byte for
    packing (fused, looped and general quantize paths; fp32, fp16 and bf16 inputs; and a run's own arguments),
    masks and the exact projection (r within and past one sign word); to within one quantization level for the
    fast projection; and a run's BatchNorm -> ReLU -> dropout (see ``_activation_problem``). Kernels that compile but
    compute differently on some GPU or compiler would otherwise corrupt a whole training run silently; this costs a
    few milliseconds once per process and device (plus, for the compiled backend, compiling what the run needs)."""
    device = torch.device(device_type, device_index)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(37, 24, generator=gen).to(device)
        wide = torch.randn(2 * _LOOPED_GROUP + 100, generator=gen).to(device)  # two looped groups, a short one
        cases = [(x, args) for args in _SELF_CHECK_QUANTIZE] + [(wide, (2, _LOOPED_GROUP, 7, None, False))]
        cases += [(x.to(dtype), _SELF_CHECK_QUANTIZE[0]) for dtype in (torch.float16, torch.bfloat16)]
        # A run's own block sizes: two full groups and a ragged rest (the layout's three cases).
        cases += [(torch.randn(2 * group_size + 13, generator=gen).to(device), (bits, group_size, 7, vm_a, tail))
                  for bits, group_size, vm_a, tail in quant_args]
        for tensor, args in cases:
            if problem := _quantize_problem(backend, tensor, args):
                return problem
        masked = torch.randn(37, 32, generator=gen).to(device)  # 32 columns: the compiled mask loops' layout
        scale = dropout_scale(dropout_p)
        checks = [("relu_pack", backend.relu_pack(x), _relu_pack_torch(x)),
                  ("dropout_pack", backend.dropout_pack(x, dropout_p, 5), _dropout_pack_torch(x, dropout_p, 5)),
                  ("dropout_apply", backend.dropout_apply(x, dropout_p, 5), _dropout_apply_torch(x, dropout_p, 5))]
        for t in (x, masked):
            t_keep = pack_mask_ref(t > 0.5)
            checks += [("relu_pack", backend.relu_pack(t), _relu_pack_torch(t)),
                       ("masked_scale", backend.masked_scale(t, t_keep, scale), _masked_scale_torch(t, t_keep, scale))]
        checks.append(("dropout_pack", backend.dropout_pack(masked, dropout_p, 5),
                       _dropout_pack_torch(masked, dropout_p, 5)))
        if backend.project_quantize_pack_exact is not None:
            checks += [(f"project_quantize_pack{args} (exact)", tuple(backend.project_quantize_pack_exact(x, *args)),
                        tuple(project_quantize_pack_ref(x, *args))) for args in _SELF_CHECK_PROJECTIONS]
        for name, got, want in checks:
            if problem := _mismatch(name, got, want):
                return problem
        if backend.project_quantize_pack is not None:
            for args in _SELF_CHECK_PROJECTIONS:
                if problem := fast_projection_problem(backend.project_quantize_pack(x, *args), x, args):
                    return problem
        if activation is not None:
            return _activation_problem(backend, activation, device, gen)
    except Exception as exc:  # a kernel that does not compile or launch here: report it, fall back
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _activation_problem(backend: Backend, check: ActivationCheck, device: torch.device,
                        generator: torch.Generator) -> str | None:
    """None when ``backend`` runs compress.activation as the torch reference does: the forward byte for byte, the
    backward (whose sums a fused backend may order differently) to fp32 rounding."""
    from sustainml_exp.compress.activation import (
        BatchNormBackward,
        BatchNormForward,
        activation_backward,
        activation_forward,
    )
    from sustainml_exp.compress.qtensor import quantize

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device)

    y, grad = rand(check.rows, check.width), rand(check.rows, check.width)
    bn = BatchNormForward(rand(check.width), rand(check.width).abs() + 0.5, rand(check.width), rand(check.width))
    bits, group_size, vm_a, fp32_tail = check.quant_args
    q = quantize(y, bits, group_size, vm=vm_a is not None, seed=3, fp32_tail=fp32_tail, backend="torch")
    results = []
    for candidate in (backend, TORCH_BACKEND):
        h, relu_mask, drop_mask = activation_forward(y.clone(), bn, check.dropout_p, 5, check.lean, candidate)
        g, bn_grads = activation_backward(grad.clone(), relu_mask, drop_mask, check.dropout_p, 5, check.lean,
                                          BatchNormBackward(q, bn.mean, bn.invstd, bn.weight), None, candidate)
        results.append(((h, relu_mask, drop_mask), (g, *bn_grads)))
    (forward, backward), (want_forward, want_backward) = results
    if problem := _mismatch("activation_forward", forward, want_forward):
        return problem
    for got, want in zip(backward, want_backward):
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
            return "activation_backward differs from the torch reference beyond fp32 rounding"
    return None


def _checked(backend: Backend, device: torch.device, workload: Workload | None) -> str | None:
    if workload is None:
        return _self_check(backend, device.type, device.index)
    return _self_check(backend, device.type, device.index, workload.quant_args, workload.dropout_p,
                       workload.activation)


@lru_cache(maxsize=1)
def _compiled_backend() -> Backend:
    from sustainml_exp.compress.compiled import COMPILED_BACKEND

    return COMPILED_BACKEND


def resolve_backend(name: str, device: torch.device | str, workload: Workload | None = None) -> Backend:
    """The backend for tensors on ``device``.

    auto: triton on CUDA when it is usable and passes its one-time self-check against the torch reference; on CPU
    the compiled torch backend when ``workload`` says the tensors are large enough for compiling to pay
    (``COMPILE_MIN_VALUES``) and it passes its self-check on the workload's arguments; else torch, with a warning
    when a self-check failed. torch-compiled (CPU only) is self-checked when a ``workload`` is given.

    Raises ValueError (one line) for an unknown name, or for an explicit backend that cannot run here or does not
    reproduce the reference."""
    if name not in COMPRESS_BACKENDS:
        raise ValueError(f"compress_backend={name!r} is not allowed; allowed: {', '.join(COMPRESS_BACKENDS)}")
    if name == "torch":
        return TORCH_BACKEND
    device = torch.device(device)
    if name == "torch-compiled":
        if device.type != "cpu":
            raise ValueError(f"compress_backend=torch-compiled compiles the reference for CPU tensors, got "
                             f"{device.type} tensors; allowed here: auto, torch, triton")
        compiled = _compiled_backend()
        if workload is not None and (problem := _checked(compiled, device, workload)) is not None:
            raise ValueError(f"compress_backend=torch-compiled fails its self-check ({problem}); "
                             "allowed here: auto, torch")
        return compiled
    if name == "auto":
        if device.type == "cpu":
            if workload is None or workload.largest_values < COMPILE_MIN_VALUES:
                return TORCH_BACKEND
            return _checked_or_reference(_compiled_backend(), device, workload)
        if device.type != "cuda" or not triton_usable(device):
            return TORCH_BACKEND
        return _checked_or_reference(_triton_backend(), device, workload)
    if triton_usable(device):
        triton = _triton_backend()
        problem = _checked(triton, device, workload)
        if problem is not None:
            raise ValueError(f"compress_backend=triton: the kernels fail their self-check on {device} ({problem}); "
                             "allowed here: auto, torch")
        return triton
    reason = _triton_import_error()
    if reason is not None:
        raise ValueError(f"compress_backend=triton cannot load the Triton kernels ({reason}); "
                         "allowed here: auto, torch")
    raise ValueError(f"compress_backend=triton needs CUDA tensors (or TRITON_INTERPRET=1 for Triton's CPU "
                     f"interpreter), got {device.type} tensors; allowed here: auto, torch")


def _checked_or_reference(backend: Backend, device: torch.device, workload: Workload | None) -> Backend:
    """auto's pick: ``backend`` where it passes its self-check, else the torch reference (with a warning)."""
    problem = _checked(backend, device, workload)
    if problem is None:
        return backend
    _warn_fallback(backend.name, problem)
    return TORCH_BACKEND


@lru_cache(maxsize=16)
def _warn_fallback(backend: str, problem: str) -> None:
    log.warning("compress_backend=auto: %s fails its self-check (%s); using the torch reference instead", backend,
                problem)
