"""Peak memory of the compressed linear layer's weight-gradient backward: chunked against unchunked.

Usage::

    python scripts/bench_linear_backward_memory.py [--device cpu|cuda] [--rows 169343] [--in-dim 128] [--out-dim 128]

The layer saves its input randomly projected to R = D / 8 columns and packed to INT2. Its backward needs
grad_out^T @ (dequantized N x R input) @ P^T. Three ways to compute it are measured side by side, each as the peak
memory of the backward above what was held before it (CUDA allocator peak, or the process's resident high-water
mark on CPU), with the FP32 linear layer's backward as the yardstick:

- ``materialised``: dequantize to N x R, multiply by P^T into an N x D fp32 estimate of the input, then the usual
  grad_out^T @ x (the public i-Exact code's order of operations);
- ``one chunk``: ``compress.grad_chunk_values=null``: the N x R dequantized input at once, P^T applied to O x R;
- ``chunked``: the default, at most ``grad_chunk_values`` dequantized values alive at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from sustainml_exp.compress import CompressionSpec, compressed_linear, dequantize, project_quantize
from sustainml_exp.compress.autograd import projection_seed
from sustainml_exp.peak_memory import PeakMemory
from sustainml_kernels.quant_ref import rademacher_ref

SEED = 7


VARIANTS = ("fp32", "materialised", "one_chunk", "chunked")


def _backward_peak_mb(args: argparse.Namespace) -> float:
    """Peak above start of one backward of ``args.variant``; its forward runs before the measurement starts."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(args.rows, args.in_dim, generator=gen).to(args.device)
    weight = torch.randn(args.out_dim, args.in_dim, generator=gen).to(args.device).requires_grad_()
    grad_out = torch.randn(args.rows, args.out_dim, generator=gen).to(args.device)
    spec = CompressionSpec(G_R=args.g_r)
    kept_dim = spec.projected_dim(args.in_dim)
    if args.variant == "materialised":
        q = project_quantize(x, kept_dim, projection_seed(SEED), spec.bits, spec.group_size(kept_dim), seed=SEED)

        def backward() -> torch.Tensor:
            rp = rademacher_ref(projection_seed(SEED), args.in_dim, kept_dim, device=x.device)
            return grad_out.t() @ (dequantize(q) @ rp.t())
    else:
        if args.variant == "fp32":
            out = F.linear(x, weight)
        else:
            chunk_values = None if args.variant == "one_chunk" else spec.grad_chunk_values
            out = compressed_linear(x, weight, None, dataclasses.replace(spec, grad_chunk_values=chunk_values), SEED)

        def backward() -> torch.Tensor:
            return torch.autograd.grad(out, weight, grad_out, retain_graph=True)[0]
    # Warm-up: the first backward in a process also pays for lazy library initialisation (tens of MB on CPU);
    # retain_graph keeps the saved activations for the measured second call.
    backward()
    gc.collect()
    meter = PeakMemory(args.device)
    meter.reset()
    backward()
    return meter.peak_above_baseline_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=169343, help="N (default: ogbn-arxiv's node count)")
    parser.add_argument("--in-dim", type=int, default=128)
    parser.add_argument("--out-dim", type=int, default=128)
    parser.add_argument("--G-R", dest="g_r", type=int, default=64)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; allowed: cpu")
    if args.variant:
        print(_backward_peak_mb(args))
        return

    # One fresh process per variant, and on CPU a fixed mmap threshold: glibc otherwise keeps freed blocks
    # resident (and raises its threshold after large frees), hiding later allocations from the high-water mark.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    common = [f"--device={args.device}", f"--rows={args.rows}", f"--in-dim={args.in_dim}",
              f"--out-dim={args.out_dim}", f"--G-R={args.g_r}"]
    peaks = {variant: float(subprocess.run([sys.executable, __file__, *common, f"--variant={variant}"], check=True,
                                           capture_output=True, text=True, env=env).stdout.split()[-1])
             for variant in VARIANTS}
    spec = CompressionSpec(G_R=args.g_r)
    kept_dim = spec.projected_dim(args.in_dim)
    print(f"device={args.device} N={args.rows} D={args.in_dim} R={kept_dim} O={args.out_dim} G/R={args.g_r}; "
          f"one N x D fp32 tensor = {args.rows * args.in_dim * 4 / 2**20:.2f} MB, "
          f"one N x R fp32 tensor = {args.rows * kept_dim * 4 / 2**20:.2f} MB\n")
    labels = {"fp32": "FP32 linear (autograd saves x)", "materialised": "compressed, N x D estimate materialised",
              "one_chunk": "compressed, one chunk (compress.grad_chunk_values=null)",
              "chunked": f"compressed, chunked ({spec.grad_chunk_values} values, default)"}
    print("| weight-gradient backward | peak above start, MB |")
    print("|---|---|")
    for variant in VARIANTS:
        print(f"| {labels[variant]} | {peaks[variant]:.2f} |")


if __name__ == "__main__":
    main()
