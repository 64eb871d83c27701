#!/usr/bin/env python
"""Vectorised vs loop-oracle contrastive sampler + loss: training steps/s side by side and a projected MoNuSeg run.

Usage: python scripts/bench_csl.py [--device cpu|cuda] [--steps 10] [--crop 300] [--batch 10] [--patch 50]
                                   [--stride 20] [--n-patches 10] [--similarity mse|ce] [--threads N]

Both implementations run in one process on the same random crops, each with its own identically initialised
network and Adam optimiser, alternating step by step so that drift in clock or load hits both alike; the median
step time of each is reported. Both use the vectorised ``draw_patches`` (the oracle only replaces the loss), so
the loop figures understate the reference code's cost, whose sampler loops too. "Sampler + loss" times
draw_patches, the loss and its backward to fixed maps, without the network. The projection multiplies the median
vectorised training step by the steps of a 300-epoch MoNuSeg run (37 training images, one crop each per epoch);
evaluation is not included.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from sustainml_exp.families.csl_segmentation.contrastive import (
    contrastive_loss,
    contrastive_loss_loop,
    draw_patches,
)
from sustainml_exp.families.csl_segmentation.model import ConfidenceNet, shift_input

MONUSEG_TRAIN_IMAGES = 37
PAPER_EPOCHS = 300
IMPLEMENTATIONS: dict[str, Callable] = {"vectorised": contrastive_loss, "loop": contrastive_loss_loop}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_rate(seconds: list[float]) -> float:
    return 1.0 / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation first")
    parser.add_argument("--crop", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--patch", type=int, default=50)
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--n-patches", type=int, default=10)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--similarity", default="mse", choices=("mse", "ce"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; allowed here: cpu")
    if args.patch > args.crop:
        parser.error(f"--patch {args.patch} is larger than --crop {args.crop}")
    device = args.device
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    data_gen = torch.Generator().manual_seed(args.seed)
    images = shift_input(torch.rand(args.batch, 3, args.crop, args.crop, generator=data_gen)).to(device)

    runs = {}
    for name, loss_fn in IMPLEMENTATIONS.items():
        torch.manual_seed(args.seed)  # identical initial weights for both
        model = ConfidenceNet(n_classes=args.classes).to(device).train()
        runs[name] = dict(loss_fn=loss_fn, model=model,
                          opt=torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-4),
                          gen=torch.Generator(device=device).manual_seed(args.seed + 1),
                          train_s=[], sampler_s=[], skipped=0)

    def draw_and_loss(run: dict, conf: torch.Tensor) -> torch.Tensor | None:
        draws = draw_patches(conf, args.patch, args.stride, args.n_patches, run["gen"])
        loss, _ = run["loss_fn"](images, conf, draws, args.similarity)
        return loss

    def train_step(run: dict) -> float:
        t0 = time.perf_counter()
        run["opt"].zero_grad(set_to_none=True)
        loss = draw_and_loss(run, run["model"](images))
        if loss is None:
            run["skipped"] += 1
        else:
            loss.backward()
            run["opt"].step()
        _sync(device)
        return time.perf_counter() - t0

    def sampler_step(run: dict, maps: torch.Tensor) -> float:
        conf = maps.detach().requires_grad_()
        t0 = time.perf_counter()
        loss = draw_and_loss(run, conf)
        if loss is not None:
            loss.backward()
        _sync(device)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for run in runs.values():
            train_step(run)
    for run in runs.values():
        run["skipped"] = 0
    for _ in range(args.steps):
        for run in runs.values():
            run["train_s"].append(train_step(run))
    with torch.no_grad():
        maps = runs["vectorised"]["model"](images)
    for _ in range(args.warmup):
        for run in runs.values():
            sampler_step(run, maps)
    for _ in range(args.steps):
        for run in runs.values():
            run["sampler_s"].append(sampler_step(run, maps))

    vec, loop = runs["vectorised"], runs["loop"]
    where = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device={device} ({where}) crop={args.crop} batch={args.batch} patch={args.patch} stride={args.stride} "
          f"n_patches={args.n_patches} classes={args.classes} similarity={args.similarity} steps={args.steps} "
          f"torch={torch.__version__}")
    print("| measured | vectorised steps/s | loop steps/s | vectorised / loop |")
    print("|---|---|---|---|")
    for label, key in (("training step (network fwd+bwd, sampler, loss, Adam)", "train_s"),
                       ("sampler + loss + backward to the maps (no network)", "sampler_s")):
        fast, slow = _median_rate(vec[key]), _median_rate(loop[key])
        print(f"| {label} | {fast:.3f} | {slow:.3f} | {fast / slow:.2f}x |")
    print(f"skipped training steps (no positive or no negative for a class): vectorised {vec['skipped']}/{args.steps}, "
          f"loop {loop['skipped']}/{args.steps}")
    steps_per_epoch = math.ceil(MONUSEG_TRAIN_IMAGES / args.batch)
    total_steps = PAPER_EPOCHS * steps_per_epoch
    projected = {name: total_steps * statistics.median(run["train_s"]) / 60 for name, run in runs.items()}
    print(f"projected {PAPER_EPOCHS}-epoch MoNuSeg training ({MONUSEG_TRAIN_IMAGES} images, batch {args.batch} -> "
          f"{steps_per_epoch} steps/epoch, {total_steps} steps) at these settings: "
          f"{projected['vectorised']:.1f} min vectorised, {projected['loop']:.1f} min loop (evaluation not included)")


if __name__ == "__main__":
    main()
