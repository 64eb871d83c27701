"""Benchmark the Triton activation-compression kernels against the device's copy bandwidth and the torch references.

Usage::

    python scripts/bench_kernels.py [--device cuda|cpu] [--shapes arxiv,flickr,large] [--rows-scale F] [--no-vm]

For each activation shape and each group layout (EXACT: one row per group; block: G/R = 64 rows per group) every
kernel is timed with ``triton.testing.do_bench`` (median). A Markdown table lists the median time, the achieved
bandwidth (bytes read + bytes written per call), its percentage of the measured copy bandwidth (``dst.copy_(src)``
of a large fp32 buffer, 2 * bytes / time) and the time of the torch reference of the same op in the same run.

Triton needs CUDA for real timings; with ``--device cpu`` only the torch references are timed (on shapes scaled
down by ``--rows-scale``, 0.05 by default there), so the script can be smoke-tested on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sustainml_exp.compress.backend import TORCH_BACKEND
from sustainml_kernels.quant_ref import (
    pack_mask_ref,
    project_quantize_pack_ref,
    quantize_pack_ref,
    rademacher_ref,
    unpack_dequantize_ref,
    unpack_mask_ref,
)


@dataclass(frozen=True)
class Shape:
    name: str
    rows: int
    in_dim: int  # input of the projected linear layer (D)
    kept_dim: int  # its projected width R = ceil(D / 8), stored as INT2
    bn_dim: int  # width of the batch-norm / ReLU input


SHAPES = {
    "arxiv": Shape("arxiv", 169_343, 128, 16, 128),
    "flickr": Shape("flickr", 89_250, 500, 63, 256),
    "large": Shape("large", 4_000_000, 128, 16, 128),
}
GROUP_ROWS = {"EXACT": 1, "G/R=64": 64}
BITS = 2
SEED = 0x5EED
PROJ_SEED = 0xC0FFEE


@dataclass
class Row:
    shape: str
    layout: str
    op: str
    tensor: str
    ms: float | None
    gbytes: float
    torch_ms: float | None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--shapes", default="arxiv,flickr,large",
                        help=f"comma-separated subset of {', '.join(SHAPES)} (default: all)")
    parser.add_argument("--rows-scale", type=float, default=None,
                        help="multiply every row count by this factor (default 1 on cuda, 0.05 on cpu)")
    parser.add_argument("--no-vm", action="store_true", help="uniform INT2 levels instead of variance-minimised")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up time in ms")
    parser.add_argument("--rep", type=int, default=100, help="do_bench measuring time in ms")
    parser.add_argument("--no-torch", action="store_true", help="skip timing the torch references")
    return parser.parse_args(argv)


def _timer(device: str, warmup: int, rep: int) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of a call: do_bench on CUDA, a wall-clock loop on CPU (do_bench needs a GPU)."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))

    def cpu_median(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return cpu_median


def _copy_bandwidth(device: str, bench: Callable[[Callable[[], object]], float]) -> float:
    """GB/s of dst.copy_(src) for a 1 GiB fp32 buffer (256 MiB on CPU): 2 * bytes / time."""
    numel = (1 << 28) if device == "cuda" else (1 << 26)
    src = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * numel * 4 / (ms * 1e-3) / 1e9


def _packed_bytes(n: int, group_size: int) -> int:
    return -(-n * BITS // 8) + 4 * -(-n // group_size)  # payload + one bf16 min and one bf16 range per group


def _bench_shape(shape: Shape, rows: int, vm: bool, bench, use_triton: bool, time_torch: bool,
                 device: str) -> list[Row]:
    from sustainml_exp.compress.vm import optimal_inner_level

    if use_triton:
        from sustainml_kernels import quant_triton as qt
        from sustainml_kernels.rp_triton import dot_supported, project_quantize_pack_triton

    gen = torch.Generator(device=device).manual_seed(0)
    x_in = torch.randn(rows, shape.in_dim, device=device, generator=gen)
    x_kept = torch.randn(rows, shape.kept_dim, device=device, generator=gen)
    x_bn = torch.randn(rows, shape.bn_dim, device=device, generator=gen)
    mask = x_bn > 0
    out: list[Row] = []

    def add(layout: str, op: str, tensor: str, triton_fn, torch_fn, nbytes: int) -> None:
        # Both callables are timed right here, so closures over loop variables see the current iteration.
        ms = bench(triton_fn) if use_triton else None
        torch_ms = bench(torch_fn) if time_torch else None
        out.append(Row(shape.name, layout, op, tensor, ms, nbytes / 1e9, torch_ms))

    kept_n = rows * shape.kept_dim
    kept_name = f"{rows} x {shape.kept_dim}"
    for layout, group_rows in GROUP_ROWS.items():
        gs = group_rows * shape.kept_dim
        vm_a = optimal_inner_level(gs) if vm else None
        packed_bytes = _packed_bytes(kept_n, gs)
        q_args = (BITS, gs, SEED, vm_a)
        add(layout, "quantize_pack", kept_name,
            (lambda: qt.quantize_pack_triton(x_kept, *q_args)) if use_triton else None,
            lambda: quantize_pack_ref(x_kept, *q_args), 4 * kept_n + packed_bytes)
        ref_packed = quantize_pack_ref(x_kept, *q_args)
        dq_args = (ref_packed.payload, ref_packed.mins, ref_packed.ranges, ref_packed.tail, x_kept.shape, BITS, gs,
                   vm_a)
        add(layout, "unpack_dequantize", kept_name,
            (lambda: qt.unpack_dequantize_triton(*dq_args)) if use_triton else None,
            lambda: unpack_dequantize_ref(*dq_args), packed_bytes + 4 * kept_n)

        pq_args = (shape.kept_dim, PROJ_SEED, BITS, gs, SEED, vm_a)

        def torch_project_quantize():
            # The torch backend's path: matmul with the regenerated matrix, then quantize.
            rp = rademacher_ref(PROJ_SEED, shape.in_dim, shape.kept_dim, device=device)
            return quantize_pack_ref(x_in @ rp, BITS, gs, SEED, vm_a)

        proj_name, proj_bytes = f"{rows} x {shape.in_dim} -> {shape.kept_dim}", 4 * rows * shape.in_dim + packed_bytes
        if device == "cpu" and not use_triton:
            # Also time the order-specified reference the fused kernel reproduces (it is not the CPU default path).
            add(layout, "project_quantize_pack (sequential ref)", proj_name, None,
                lambda: project_quantize_pack_ref(x_in, *pq_args), proj_bytes)

        def cublas_then_quantize():
            rp = rademacher_ref(PROJ_SEED, shape.in_dim, shape.kept_dim, device=device)
            return qt.quantize_pack_triton(x_in @ rp, BITS, gs, SEED, vm_a)

        # The fused exact kernel (bit-identical to the sequential reference), the fast path training takes (tl.dot
        # fused with the quantization where dot_supported, else cuBLAS + quantize) and cuBLAS + the quantize kernel.
        # Their torch column is the torch backend's matmul + quantize_pack_ref.
        add(layout, "project_quantize_pack exact (fused, sequential sum)", proj_name,
            (lambda: project_quantize_pack_triton(x_in, *pq_args)) if use_triton else None,
            torch_project_quantize, proj_bytes)
        fast_kind = "tl.dot fused" if use_triton and dot_supported(shape.kept_dim, gs) else "cuBLAS + quantize"
        add(layout, f"project_quantize_pack fast ({fast_kind})", proj_name,
            (lambda: project_quantize_pack_triton(x_in, *pq_args, exact=False)) if use_triton else None,
            torch_project_quantize, proj_bytes)
        add(layout, "cuBLAS x @ P + quantize_pack kernel", proj_name, cublas_then_quantize if use_triton else None,
            torch_project_quantize, proj_bytes)

    bn_n = rows * shape.bn_dim
    bn_name = f"{rows} x {shape.bn_dim}"
    add("-", "relu_pack", bn_name, (lambda: qt.relu_pack_triton(x_bn)) if use_triton else None,
        lambda: (torch.relu(x_bn), pack_mask_ref(x_bn > 0)), 4 * bn_n + 4 * bn_n + -(-bn_n // 8))
    add("-", "pack_mask", bn_name + " bool", (lambda: qt.pack_mask_triton(mask)) if use_triton else None,
        lambda: pack_mask_ref(mask), bn_n + -(-bn_n // 8))
    packed_mask = pack_mask_ref(mask)
    add("-", "unpack_mask", bn_name + " bool", (lambda: qt.unpack_mask_triton(packed_mask, mask.shape))
        if use_triton else None, lambda: unpack_mask_ref(packed_mask, mask.shape), -(-bn_n // 8) + bn_n)
    add("-", "dropout_pack (p=0.5)", bn_name, (lambda: qt.dropout_pack_triton(x_bn, 0.5, SEED)) if use_triton else None,
        lambda: TORCH_BACKEND.dropout_pack(x_bn, 0.5, SEED), 4 * bn_n + 4 * bn_n + -(-bn_n // 8))
    add("-", "masked_scale (dropout backward)", bn_name,
        (lambda: qt.masked_scale_triton(x_bn, packed_mask, 2.0)) if use_triton else None,
        lambda: TORCH_BACKEND.masked_scale(x_bn, packed_mask, 2.0), 4 * bn_n + -(-bn_n // 8) + 4 * bn_n)
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _table(rows: list[Row], copy_gbs: float) -> str:
    lines = ["| shape | groups | op | tensor | triton ms | GB/s | % of copy | torch ms | speed-up |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        gbs = None if r.ms is None else r.gbytes / (r.ms * 1e-3)
        pct = None if gbs is None else 100 * gbs / copy_gbs
        speedup = None if r.ms is None or r.torch_ms is None else r.torch_ms / r.ms
        lines.append(f"| {r.shape} | {r.layout} | {r.op} | {r.tensor} | {_fmt(r.ms, '.3f')} | {_fmt(gbs, '.0f')} | "
                     f"{_fmt(pct, '.0f')} | {_fmt(r.torch_ms, '.3f')} | {_fmt(speedup, '.1f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available here; allowed: cpu", file=sys.stderr)
        return 2
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        print(f"error: unknown shapes {unknown}; allowed: {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    scale = args.rows_scale if args.rows_scale is not None else (1.0 if args.device == "cuda" else 0.05)
    use_triton = args.device == "cuda"
    bench = _timer(args.device, args.warmup, args.rep)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    if not use_triton:
        print("Triton kernels need CUDA (on CPU they run only in the interpreter, which says nothing about speed); "
              "timing only the torch references.\n")
    copy_gbs = _copy_bandwidth(args.device, bench)
    rows: list[Row] = []
    for name in names:
        shape = SHAPES[name]
        n_rows = max(1, math.ceil(shape.rows * scale))
        rows += _bench_shape(shape, n_rows, not args.no_vm, bench, use_triton, not args.no_torch, args.device)
        if args.device == "cuda":
            torch.cuda.empty_cache()

    print(f"## Kernel benchmark on {device_name}\n")
    print(f"INT{BITS}{'' if args.no_vm else ' (VM)'}, rows scaled by {scale:g}; copy bandwidth (dst.copy_(src), "
          f"fp32): {copy_gbs:.0f} GB/s; times are medians; GB/s counts bytes read + bytes written per call; "
          "torch project_quantize_pack = matmul with the regenerated matrix + quantize_pack_ref.\n")
    print(_table(rows, copy_gbs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
