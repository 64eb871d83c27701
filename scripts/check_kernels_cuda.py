"""Check every Triton kernel of ``sustainml_kernels`` against its torch reference on the same inputs and seeds.

Usage::

    python scripts/check_kernels_cuda.py [--device cuda|cpu] [--small] [--max-seconds S]

The kernels have been verified only under Triton's CPU interpreter; this script is the check for a real GPU. Each
line is one check (kernel, case, PASS/FAIL, max abs diff); the last line is ``N checks, M failed``. The exit code is
1 when a check fails, 2 when the device is unusable and 3 when ``--max-seconds`` ran out before every check ran.

What is compared, and why nothing has a tolerance:

* packed outputs (quantize+pack payload bytes, bf16 group minima/ranges, raw fp32 tails, 1-bit masks) must be
  identical byte for byte: both sides hash the same (seed, offset) counters and pack the same layout;
* floats (dequantized values, projections, relu/dropout/masked-scale outputs) must have identical bit patterns
  (so -0.0 != +0.0); only NaN payloads may differ, as the reference leaves them unspecified. ``quant_ref``
  fixes every fp32 operation and its order, and the kernels launch with ``enable_fp_fusion=False`` and
  correctly rounded division, so any difference, however small, is a bug (an FMA contraction, flushed
  subnormals, a fast division) that a tolerance would hide. The printed max abs diff says how far off it is.

Cases: the fused, looped and general quantize paths; G_R (rows per quantization block) = 1, 2, 64 and 128 on row
counts that are not multiples of the block and on odd feature counts; bits 2 (uniform and variance-minimised
levels), 4 and 8; ragged last groups as short groups and as raw fp32 tails; fp16/bf16 inputs; zero-range,
subnormal and signed-zero values; the fused projection (r <= 64, byte-aligned groups) and its unfused fallback
(r > 64 or groups ending mid-byte), on a strided input too; relu/dropout masks with inf/NaN inputs. Without
``--small`` a Flickr-sized layer (4099 x 500 -> r = 63) and the arxiv-sized 169343 x 128 activation (r = 16) are
added; on CUDA the torch reference is also compared between CUDA and CPU on the small cases, because the torch
backend on CUDA must write the same bytes as on CPU.

``--device cpu`` runs the kernels in Triton's interpreter (``TRITON_INTERPRET=1``, which this script sets before
triton is imported) on the small cases only: the smoke test of this script in the default test suite.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator

import torch

SEED = 0x0123456789ABCDEF  # both 32-bit halves non-zero, so the high seed word reaches the hash
PROJ_SEED = 0xFEDCBA9876543210
G_RS = (1, 2, 64, 128)
# (bits, variance-minimised INT2 levels): the widths the training configs allow
QUANT_VARIANTS = ((2, False), (2, True), (4, False), (8, False))
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
ARXIV = (169_343, 128)  # ogbn-arxiv's node count and feature width

# Parts = (name, got, want) triples compared as one check.
Parts = list[tuple[str, torch.Tensor | None, torch.Tensor | None]]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--small", action="store_true", help="small shapes only (always so with --device cpu)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop starting new checks after this long; the rest count as not run (exit 3)")
    args = parser.parse_args(argv)
    args.small = args.small or args.device == "cpu"  # the interpreter is far too slow for the large shapes
    return args


# --------------------------------------------------------------------------------------------- comparison


def _int_view(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _compare(got: torch.Tensor, want: torch.Tensor) -> tuple[int, float, str | None]:
    """(elements that differ, max abs diff, problem with dtype/shape or None). Floats compare by bit pattern,
    except that any NaN equals any NaN."""
    if got.dtype != want.dtype or got.shape != want.shape or got.device != want.device:
        return -1, math.inf, f"{got.dtype}{tuple(got.shape)}@{got.device} vs {want.dtype}{tuple(want.shape)}"
    if got.dtype.is_floating_point:
        same = (_int_view(got) == _int_view(want)) | (got.isnan() & want.isnan())
        delta = (got.double() - want.double()).abs()
        delta = torch.where(delta.isnan(), math.inf, delta)  # inf - inf or a NaN on one side only
    else:
        same = got == want
        delta = (got.to(torch.int64) - want.to(torch.int64)).abs().double()
    n_diff = int((~same).sum())
    return n_diff, float(delta[~same].max()) if n_diff else 0.0, None


def _compare_parts(parts: Parts) -> tuple[bool, float, str]:
    ok, worst, notes = True, 0.0, []
    for name, got, want in parts:
        if got is None or want is None:
            if (got is None) != (want is None):
                ok, worst = False, math.inf
                notes.append(f"{name}: {'missing' if got is None else 'unexpected'}")
            continue
        n_diff, diff, problem = _compare(got, want)
        worst = max(worst, diff)
        if problem or n_diff:
            ok = False
            notes.append(f"{name}: {problem or f'{n_diff}/{want.numel()} differ'}")
    return ok, worst, "; ".join(notes)


def _within_one_level(packed, x: torch.Tensor, args: tuple) -> Parts:
    """No parts to compare bit for bit; raises (a failed check) when ``packed`` is not within one level of the
    reference projection (sustainml_exp.compress.backend.fast_projection_problem, the self-check's test)."""
    from sustainml_exp.compress.backend import fast_projection_problem

    if problem := fast_projection_problem(packed, x, args):
        raise AssertionError(problem)
    return []


def _packed_parts(got, want) -> Parts:
    return [(field, getattr(got, field), getattr(want, field)) for field in ("payload", "mins", "ranges", "tail")]


class Runner:
    """Runs checks one at a time, prints one line each and counts failures."""

    def __init__(self, device: torch.device, max_seconds: float | None) -> None:
        self.device, self.max_seconds = device, max_seconds
        self.start = time.perf_counter()
        self.n = self.failed = self.not_run = 0

    def check(self, kernel: str, case: str, fn: Callable[[], Parts]) -> None:
        if self.max_seconds is not None and time.perf_counter() - self.start > self.max_seconds:
            self.not_run += 1
            return
        self.n += 1
        t0 = time.perf_counter()
        try:
            ok, diff, note = _compare_parts(fn())
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # an asynchronous launch error surfaces here, inside the try
        except Exception as exc:  # a kernel that fails to compile or launch is a failed check, not the end of the run
            ok, diff, note = False, math.inf, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        self.failed += not ok
        line = f"{'PASS' if ok else 'FAIL'} {kernel:<26} {case:<50} max_abs_diff={diff:<8.3g}"
        print(f"{line} [{time.perf_counter() - t0:.2f}s]{'  ' + note if note else ''}", flush=True)


# --------------------------------------------------------------------------------------------- inputs


def _gaussian(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N x D Gaussian values with column scales over two decades and a shift, so groups get unequal ranges and
    minima of both signs. Drawn on the CPU, so that every device checks the same numbers."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, d) if d > 1 else torch.ones(1)
    return (torch.randn(n, d, generator=gen) * scales + 0.25).to(dtype)


def _with_quant_specials(x: torch.Tensor) -> torch.Tensor:
    """Row 0 constant (zero-range groups at G_R = 1), row 1 led by signed zeros and subnormals, row 2 all
    subnormal (subnormal group minima and ranges: a GPU that flushes them to zero fails)."""
    x = x.clone()
    gen = torch.Generator().manual_seed(99)
    x[0] = 0.75
    k = min(4, x.shape[1])
    x[1, :k] = torch.tensor([-0.0, 0.0, 1e-40, -1e-40])[:k]
    x[2] = torch.randn(x.shape[1], generator=gen) * 1e-39
    return x


def _with_elementwise_specials(x: torch.Tensor) -> torch.Tensor:
    """x with its first values replaced by signed zeros, infinities, NaN and fp32 subnormals."""
    flat = x.reshape(-1).clone()
    specials = torch.tensor([-0.0, 0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-40]).to(x.dtype)
    k = min(flat.numel(), specials.numel())
    flat[:k] = specials[:k]
    return flat.view(x.shape)


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# --------------------------------------------------------------------------------------------- cases


def _quant_cases(small: bool) -> Iterator[tuple[tuple[int, int], torch.dtype, int, bool, int, bool, bool]]:
    """(shape, dtype, bits, vm, G_R, fp32_tail, specials). Row counts are no multiple of 64 or 128, and the
    G_R = 64 / 128 blocks of the small shapes are longer than the tensor (one short group) or end ragged."""
    shapes = [(37, 24), (300, 7)] + ([] if small else [ARXIV, (4099, 63)])
    for shape in shapes:
        specials = shape[0] < 1000
        for g_r in G_RS:
            for bits, vm in QUANT_VARIANTS:
                yield shape, torch.float32, bits, vm, g_r, False, specials
            yield shape, torch.float32, 2, False, g_r, True, specials  # a ragged end kept as a raw fp32 tail
    for dtype in (torch.float16, torch.bfloat16):  # kernels read low-precision inputs and convert exactly
        yield (37, 24), dtype, 4, False, 2, False, False


def _proj_cases(small: bool) -> Iterator[tuple[tuple[int, int], int, bool, torch.dtype, list]]:
    """(shape, r, strided, dtype, [(bits, vm, G_R, fp32_tail)]). r = ceil(D / 8) as in training, except the
    r = 65 case, which takes the per-value sign path (r > MAX_FUSED_R), and r = 16, which the fast path projects
    with tl.dot. Interpreter time grows with D, so the small cases keep D small."""
    yield (37, 24), 3, False, torch.float32, [(2, False, 1, False), (2, True, 64, True), (4, False, 2, False),
                                              (8, False, 128, False)]
    yield (29, 9), 2, True, torch.float32, [(2, False, 64, False)]
    yield (11, 8), 65, False, torch.float32, [(4, False, 1, False)]
    yield (37, 24), 16, False, torch.float32, [(2, False, 1, False), (2, True, 4, True)]  # the fast path's tl.dot
    yield (37, 24), 3, False, torch.bfloat16, [(2, False, 64, False)]
    if not small:
        full = [(bits, vm, g_r, False) for g_r in G_RS for bits, vm in QUANT_VARIANTS] + [(2, False, 64, True)]
        yield ARXIV, 16, False, torch.float32, full
        yield (4099, 500), 63, False, torch.float32, full  # Flickr: G_R = 1 groups of 63 end mid-byte


def _elementwise_shapes(small: bool) -> list[tuple[int, ...]]:
    # 1025: two mask programs and a last byte holding one bit; 3x5x7: 105 elements, a ragged last byte
    return [(1025,), (37, 24), (3, 5, 7)] + ([] if small else [ARXIV, (4099, 500)])


# --------------------------------------------------------------------------------------------- checks


def _check_quantize(run: Runner, ref, qt, vm_level: Callable[[int], float], dev: torch.device, small: bool) -> None:
    for shape, dtype, bits, vm, g_r, tail, specials in _quant_cases(small):
        x_cpu = _gaussian(*shape, seed=shape[0] + bits + g_r)
        x_cpu = (_with_quant_specials(x_cpu) if specials else x_cpu).to(dtype)
        x = x_cpu.to(dev)
        gs = g_r * shape[1]
        vm_a = vm_level(gs) if vm else None
        path = "general" if gs * bits % 8 else ("looped" if gs > qt.MAX_GROUP_TILE else "fused")
        case = (f"{_shape_name(shape)} {DTYPE_NAMES[dtype]} bits={bits}{'vm' if vm else ''} G_R={g_r} gs={gs} "
                f"{path}{' tail' if tail else ''}")
        args = (bits, gs, SEED, vm_a, tail)
        run.check("quantize_pack", case,
                  lambda: _packed_parts(qt.quantize_pack_triton(x, *args), ref.quantize_pack_ref(x, *args)))

        def dequantize(x=x, args=args, shape=shape) -> Parts:
            packed = ref.quantize_pack_ref(x, *args)  # the reference's bytes, so this check stands on its own
            dq_args = (tuple(shape), args[0], args[1], args[3])
            return [("values", qt.unpack_dequantize_triton(*packed, *dq_args),
                     ref.unpack_dequantize_ref(*packed, *dq_args))]

        run.check("unpack_dequantize", case, dequantize)
        if dev.type == "cuda" and shape[0] < 1000:
            run.check("quantize_pack_ref cuda/cpu", case, lambda: _packed_parts(
                ref.quantize_pack_ref(x, *args), _to(ref.quantize_pack_ref(x_cpu, *args), dev)))


def _to(packed, dev: torch.device):
    return type(packed)(*(None if t is None else t.to(dev) for t in packed))


def _check_projection(run: Runner, ref, rp, vm_level: Callable[[int], float], dev: torch.device,
                      small: bool) -> None:
    for shape, r, strided, dtype, variants in _proj_cases(small):
        # The transposed view has strides (1, N), which .to() keeps: the kernels must read x through its strides.
        x_cpu = (_gaussian(shape[1], shape[0], seed=r).t() if strided else _gaussian(*shape, seed=r)).to(dtype)
        x = x_cpu.to(dev)
        prefix = f"{_shape_name(shape)} {DTYPE_NAMES[dtype]} r={r}{'' if x.is_contiguous() else ' strided'}"
        run.check("project_rademacher", prefix,
                  lambda: [("values", rp.project_rademacher_triton(x, PROJ_SEED, r),
                            ref.project_rademacher_ref(x, PROJ_SEED, r))])
        if dev.type == "cuda" and shape[0] < 1000:
            run.check("project_rademacher_ref cuda/cpu", prefix,
                      lambda: [("values", ref.project_rademacher_ref(x, PROJ_SEED, r),
                                ref.project_rademacher_ref(x_cpu, PROJ_SEED, r).to(dev))])
        for bits, vm, g_r, tail in variants:
            gs = g_r * r
            args = (r, PROJ_SEED, bits, gs, SEED, vm_level(gs) if vm else None, tail)
            path = "fused" if rp.fused_supported(r, bits, gs) else "unfused"
            case = f"{prefix} bits={bits}{'vm' if vm else ''} G_R={g_r} gs={gs} {path}{' tail' if tail else ''}"
            run.check("project_quantize_pack", case,
                      lambda: _packed_parts(rp.project_quantize_pack_triton(x, *args),
                                            ref.project_quantize_pack_ref(x, *args)))
            # The fast path sums in a blocked order: within one quantization level of the reference, not bytes.
            run.check("project_quantize_pack fast", case + (" tl.dot" if rp.dot_supported(r, gs) else " cuBLAS"),
                      lambda: _within_one_level(rp.project_quantize_pack_triton(x, *args, exact=False), x, args))


def _check_elementwise(run: Runner, ref, qt, torch_ops, dev: torch.device, small: bool) -> None:
    for shape in _elementwise_shapes(small):
        name, n = _shape_name(shape), math.prod(shape)
        gen = torch.Generator().manual_seed(n)
        mask = (torch.rand(shape, generator=gen) < 0.5).to(dev)
        run.check("pack_mask", name, lambda: [("bytes", qt.pack_mask_triton(mask), ref.pack_mask_ref(mask))])
        # Random bytes set the padding bits past the last element too: both sides must ignore them.
        packed = torch.randint(0, 256, (-(-n // 8),), generator=gen, dtype=torch.uint8).to(dev)
        run.check("unpack_mask", name,
                  lambda: [("mask", qt.unpack_mask_triton(packed, shape), ref.unpack_mask_ref(packed, shape))])
        for dtype in FLOAT_DTYPES:
            x = _with_elementwise_specials(_gaussian(1, n, seed=n + 1, dtype=dtype).view(shape)).to(dev)
            case = f"{name} {DTYPE_NAMES[dtype]}"
            run.check("relu_pack", case, lambda: _pairs(("out", "mask"), qt.relu_pack_triton(x),
                                                        torch_ops.relu_pack(x)))
            ps = (0.0, 0.3, 1.0) if shape == (37, 24) and dtype == torch.float32 else (0.3,)
            for p in ps:
                seed = SEED + int(p * 10)
                run.check("dropout_pack", f"{case} p={p}", lambda: _pairs(
                    ("out", "mask"), qt.dropout_pack_triton(x, p, seed), torch_ops.dropout_pack(x, p, seed)))
                run.check("dropout_apply", f"{case} p={p}", lambda: [
                    ("out", qt.dropout_apply_triton(x, p, seed), torch_ops.dropout_apply(x, p, seed))])
            scale = torch_ops.dropout_scale(0.3)
            run.check("masked_scale", case, lambda: [
                ("out", qt.masked_scale_triton(x, packed, scale), torch_ops.masked_scale(x, packed, scale))])
        if dev.type == "cuda" and n < 10_000:
            run.check("dropout_mask_ref cuda/cpu", name,
                      lambda: [("mask", ref.dropout_mask_ref(SEED, shape, 0.3, device=dev),
                                ref.dropout_mask_ref(SEED, shape, 0.3).to(dev))])


def _pairs(names: tuple[str, ...], got: tuple, want: tuple) -> Parts:
    return list(zip(names, got, want, strict=True))


# --------------------------------------------------------------------------------------------- main


def _prepare_device(args: argparse.Namespace) -> torch.device | None:
    """The device, after choosing the interpreter before anything imports triton; None (with a message) when
    the kernels cannot run as asked."""
    interpret = os.environ.get("TRITON_INTERPRET")
    if args.device == "cpu":
        if "triton" in sys.modules and interpret != "1":
            print("--device cpu needs TRITON_INTERPRET=1 before triton is imported", file=sys.stderr)
            return None
        os.environ["TRITON_INTERPRET"] = "1"
        # numpy, which runs the interpreted kernels, warns about the inf/NaN arithmetic the special values ask for
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return torch.device("cpu")
    if interpret == "1":
        print("--device cuda with TRITON_INTERPRET=1 would interpret, not compile, the kernels; unset it",
              file=sys.stderr)
        return None
    if not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available (use --device cpu for the interpreter)", file=sys.stderr)
        return None
    return torch.device("cuda")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    dev = _prepare_device(args)
    if dev is None:
        return 2
    # Imported only now: quant_triton and rp_triton import triton, which reads TRITON_INTERPRET at import time.
    import triton

    from sustainml_exp.compress import backend
    from sustainml_exp.compress.vm import optimal_inner_level
    from sustainml_kernels import quant_ref, quant_triton, rp_triton

    torch_ops = argparse.Namespace(relu_pack=backend._relu_pack_torch, dropout_pack=backend._dropout_pack_torch,
                                   dropout_apply=backend._dropout_apply_torch,
                                   masked_scale=backend._masked_scale_torch, dropout_scale=backend.dropout_scale)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU, Triton interpreter"
    print(f"# torch {torch.__version__}, triton {triton.__version__}, {where}; "
          f"{'small shapes' if args.small else 'all shapes'}", flush=True)
    run = Runner(dev, args.max_seconds)
    _check_quantize(run, quant_ref, quant_triton, optimal_inner_level, dev, args.small)
    _check_projection(run, quant_ref, rp_triton, optimal_inner_level, dev, args.small)
    _check_elementwise(run, quant_ref, quant_triton, torch_ops, dev, args.small)
    elapsed = time.perf_counter() - run.start
    if run.not_run:
        print(f"# {run.not_run} checks not run: --max-seconds {args.max_seconds:g} ran out", flush=True)
    print(f"# {elapsed:.1f}s", flush=True)
    print(f"{run.n} checks, {run.failed} failed", flush=True)
    return 1 if run.failed else (3 if run.not_run else 0)


if __name__ == "__main__":
    sys.exit(main())
