#!/usr/bin/env python
"""Minimal finite covering of one real-sized class: blocked distances vs a per-pair loop, greedy vs exact covering.

Usage: python scripts/bench_mfc.py [--dataset fashion_mnist|synthetic] [--data-dir ./data] [--label 0] [--n N]
                                   [--k 50] [--solver exact|greedy] [--time-limit 20] [--device cpu|cuda]
                                   [--threads N] [--json out.json]

Default: class 0 (T-shirt/top, 6,000 images, 784 pixels) of Fashion-MNIST as ``load_image_dataset`` finds it
(data_dir, else Debian's dataset-fashion-mnist package). Without it the run falls back to a synthetic class of
6,000 784-dim points in [0, 1] (a 16-dim latent through a random linear map and a sigmoid, plus noise) and says so.

Distances: the blocked float64 matmul of ``pairwise_distances`` over the whole class, against a Python loop that
computes one numpy norm per pair on a random subsample of the class in the same run; the loop's time is
extrapolated to the class by the number of pairs (n (n - 1) / 2). The subsample also checks that both agree.
Covering: ``min_radius_cover`` at budget k from the same first point as the kcenter baseline would take, with the
solver's time limit applying to every LP and MILP; the wall time covers the whole bisection plus the final
minimisation. Greedy k is greedy set cover's size at the radius found, exact k the cover returned there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.selection.covering import (
    min_radius_cover,
    pairwise_distances,
    verify_certificate,
)

SYNTHETIC_N = 6000
SYNTHETIC_DIM = 784
SYNTHETIC_LATENT = 16


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def synthetic_class(n: int, seed: int) -> torch.Tensor:
    """n points in [0, 1]^784 on a noisy 16-dim manifold: image-like low intrinsic dimension, not a uniform cube
    (whose pairwise distances all concentrate around one value)."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, SYNTHETIC_LATENT, generator=gen)
    mixing = torch.randn(SYNTHETIC_LATENT, SYNTHETIC_DIM, generator=gen) / math.sqrt(SYNTHETIC_LATENT)
    noise = 0.3 * torch.randn(n, SYNTHETIC_DIM, generator=gen)
    return torch.sigmoid(2.0 * (latent @ mixing) + noise)


def load_class(args: argparse.Namespace) -> tuple[torch.Tensor, str]:
    """The pixels (n, d) of the benchmarked class and a line saying where they come from."""
    if args.dataset == "fashion_mnist":
        try:
            from sustainml_exp.errors import UserError
            from sustainml_exp.families.mfc_coreset.data import load_image_dataset
        except ImportError as err:
            note = f"fashion_mnist loader not available ({err}); synthetic class instead"
        else:
            try:
                data = load_image_dataset("fashion_mnist", args.data_dir)
            except UserError as err:
                note = f"fashion_mnist not found ({err}); synthetic class instead"
            else:
                members = data.train.class_indices(args.label)
                pixels = data.train.x[torch.as_tensor(members)].flatten(1)
                return pixels, f"fashion_mnist class {args.label} from {data.source}"
        print(f"NOTE: {note}", file=sys.stderr)
        return synthetic_class(SYNTHETIC_N, args.seed), f"synthetic ({note})"
    return synthetic_class(SYNTHETIC_N, args.seed), "synthetic (requested)"


def naive_distances(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The per-pair loop (one numpy norm per pair, float64) and its seconds."""
    m = len(points)
    out = np.zeros((m, m))
    begin = time.perf_counter()
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = np.sqrt(np.sum((points[i] - points[j]) ** 2))
    return out, time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "synthetic"))
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--label", type=int, default=0, help="class of the dataset to cover")
    parser.add_argument("--n", type=int, default=0, help="cover a random subset of n images of the class (0: all)")
    parser.add_argument("--k", type=int, default=50, help="centres (the paper's budget per class)")
    parser.add_argument("--solver", default="exact", choices=("exact", "greedy"))
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per LP / MILP solve")
    parser.add_argument("--mip-rel-gap", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=64, help="bisection steps at most")
    parser.add_argument("--block", type=int, default=4096, help="rows per block of the distance computation")
    parser.add_argument("--naive-sample", type=int, default=300, help="points of the per-pair loop's subsample")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="log every bisection step and solver call")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(relativeCreated)8.0f ms %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    pixels, source = load_class(args)
    rng = np.random.default_rng(args.seed)
    if args.n:
        if args.n > len(pixels):
            parser.error(f"--n {args.n} is larger than the class ({len(pixels)} images)")
        pixels = pixels[torch.as_tensor(np.sort(rng.choice(len(pixels), size=args.n, replace=False)))]
    n, dim = pixels.shape
    if not 1 <= args.k <= n:
        parser.error(f"--k {args.k}; allowed: 1 <= k <= {n} (the class size)")
    points = pixels.to(args.device)

    pairwise_distances(points[:8], block=args.block)  # warm-up (CUDA context, BLAS initialisation)
    _sync(args.device)
    begin = time.perf_counter()
    dist = pairwise_distances(points, block=args.block)
    _sync(args.device)
    distance_s = time.perf_counter() - begin

    sample = np.sort(rng.choice(n, size=min(args.naive_sample, n), replace=False))
    naive, naive_sample_s = naive_distances(pixels[torch.as_tensor(sample)].double().numpy())
    m = len(sample)
    naive_class_s = naive_sample_s * (n * (n - 1) / 2) / max(m * (m - 1) / 2, 1)
    blocked_sample = dist[torch.as_tensor(sample, device=dist.device)][:, torch.as_tensor(sample, device=dist.device)]
    max_abs_diff = float(np.abs(blocked_sample.double().cpu().numpy() - naive).max())

    first = int(rng.integers(n))
    begin = time.perf_counter()
    cover = min_radius_cover(dist, args.k, first=first, solver=args.solver, time_limit_s=args.time_limit,
                             mip_rel_gap=args.mip_rel_gap, max_steps=args.max_steps, block=args.block)
    covering_s = time.perf_counter() - begin
    certified = verify_certificate(points, cover.centres, cover.eta, points=True, block=args.block)
    density = float((dist <= cover.eta).float().mean())

    figures = {
        "source": source, "device": args.device, "threads": torch.get_num_threads(), "n": n, "dim": dim,
        "k": args.k, "solver": args.solver, "time_limit_s": args.time_limit,
        "distance_s": distance_s, "naive_sample_points": m, "naive_sample_s": naive_sample_s,
        "naive_class_s_extrapolated": naive_class_s, "distance_speedup": naive_class_s / distance_s,
        "distance_max_abs_diff": max_abs_diff,
        "kcenter_radius": cover.kcenter_radius, "eta": cover.eta, "eta_lower": cover.eta_lower,
        "cover_density": density, "k_exact": cover.k, "k_greedy": cover.k_greedy, "lp_bound": cover.lp_bound,
        "lower_bound": cover.lower_bound, "gap": cover.gap, "status": cover.status, "steps": cover.steps,
        "undecided": cover.undecided, "certified": certified, "certificate": cover.certificate,
        "multiplicity_max": int(cover.multiplicities.max()), "covering_wall_s": covering_s,
        **{f"covering_{key}": value for key, value in cover.timings.items()},
    }
    print(f"MFC bench: {source}; n={n}, dim={dim}, k={args.k}, solver={args.solver}, device={args.device}, "
          f"threads={figures['threads']}, time limit {args.time_limit:g} s per LP/MILP")
    rows = [
        ("distances, blocked (s)", f"{distance_s:.3f}"),
        (f"distances, per-pair loop (s, from {m} points x pairs)", f"{naive_class_s:.1f}"),
        ("speed-up", f"{naive_class_s / distance_s:.0f}x"),
        ("max |blocked - loop| on the subsample", f"{max_abs_diff:.2e}"),
        ("greedy k-center radius r_g", f"{cover.kcenter_radius:.4f}"),
        ("eta found (proven lower bound)", f"{cover.eta:.4f} ({cover.eta_lower:.4f})"),
        ("cover density at eta", f"{density:.3f}"),
        ("greedy k at eta", str(cover.k_greedy)),
        ("exact k at eta", str(cover.k)),
        ("LP bound at eta", f"{cover.lp_bound:.2f}" if math.isfinite(cover.lp_bound) else "not solved"),
        ("proven lower bound on k at eta", f"{cover.lower_bound:.0f}"),
        ("gap", f"{cover.gap:.3f}"),
        ("status", cover.status),
        ("bisection steps (undecided)", f"{cover.steps} ({cover.undecided})"),
        ("certificate verified", str(certified)),
        ("covering wall time (s)", f"{covering_s:.1f}"),
        ("  of which greedy / packing / sparse build / LP / MILP (s)",
         " / ".join(f"{cover.timings[key]:.1f}" for key in ("greedy_s", "packing_s", "build_s", "lp_s", "milp_s"))),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
