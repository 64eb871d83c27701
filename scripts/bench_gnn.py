#!/usr/bin/env python
"""FP32 vs EXACT INT2 vs block INT2 (G/R=64, +VM, lean) side by side: epochs/s, act_mem_mb, peak memory, ratio to FP32.

Usage: python scripts/bench_gnn.py [--dataset synthetic_arxiv] [--steps 10] [--rounds 3] [--device auto]

Speed is measured in one process with the configurations interleaved round by round (so drift in clock or
thermal state hits all of them alike); the median of each configuration's rounds is reported. Peak memory: the
most a configuration's timed steps held above what was held before them (CUDA allocator peak, or on CPU the
resident high-water mark, reset before each configuration's steps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sustainml_exp.families.gnn_blockquant.config import CompressConfig, GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import load_graph
from sustainml_exp.families.gnn_blockquant.train import build_model, measure_activation_mb, train_step
from sustainml_exp.peak_memory import PeakMemory

CONFIGS = {
    "FP32": dict(quant="fp32", vm=False, lean=False),
    "EXACT INT2 D/R=8": dict(quant="exact", vm=False, lean=False),
    "INT2 block G/R=64": dict(quant="block", vm=False, lean=False),
    "INT2 block G/R=64 + VM": dict(quant="block", vm=True, lean=False),
    "INT2 block G/R=64 lean": dict(quant="block", vm=False, lean=True),
}


def make_config(name: str, dataset: str) -> GNNRunConfig:
    knobs = CONFIGS[name]
    compress = CompressConfig(quant=knobs["quant"], bits=2, kept_frac=0.125, G_R=64, vm=knobs["vm"], backend="auto",
                              lean=knobs["lean"])
    cfg = GNNRunConfig(dataset=dataset, quant=knobs["quant"], vm=knobs["vm"], G_R=64, lean=knobs["lean"],
                       compress=compress)
    cfg.validate()
    return cfg


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _ratio(value: float, base: float) -> str:
    # A tiny graph can stay within pages already held, so FP32's peak above baseline may be 0.
    return f"{value / base:.3f}" if base > 0 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic_arxiv")
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per config per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    graph = load_graph(args.dataset, Path(args.data_dir), seed=0).to(device)
    runs = {}
    for name in CONFIGS:
        cfg = make_config(name, args.dataset)
        torch.manual_seed(0)
        model = build_model(cfg, graph).to(device)
        act_mb = measure_activation_mb(model, graph, cfg)
        runs[name] = dict(cfg=cfg, model=model, opt=torch.optim.Adam(model.parameters(), lr=cfg.model.lr),
                          act_mb=act_mb, rates=[], peak_mb=0.0, step=0)
    for run in runs.values():  # warm-up: allocator, kernels, caches
        for _ in range(2):
            run["step"] += 1
            train_step(run["model"], graph, run["opt"], run["cfg"], run["step"])
    for _ in range(args.rounds):
        for name, run in runs.items():
            peak_memory = PeakMemory(device)
            peak_memory.reset()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                run["step"] += 1
                train_step(run["model"], graph, run["opt"], run["cfg"], run["step"])
            _sync(device)
            run["rates"].append(args.steps / (time.perf_counter() - t0))
            run["peak_mb"] = max(run["peak_mb"], peak_memory.peak_above_baseline_mb())
            run["peak_source"] = peak_memory.source
    base = runs["FP32"]
    base_eps = statistics.median(base["rates"])
    peak_label = f"peak MB above baseline ({base['peak_source']})"
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"dataset={args.dataset} device={device} ({gpu}) steps={args.steps} rounds={args.rounds} "
          f"torch={torch.__version__}")
    print(f"| config | e/s | e/s ratio to FP32 | act MB | act ratio to FP32 | {peak_label} | peak ratio to FP32 |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        eps = statistics.median(run["rates"])
        print(f"| {name} | {eps:.3f} | {eps / base_eps:.3f} | {run['act_mb']:.2f} | "
              f"{run['act_mb'] / base['act_mb']:.4f} | {run['peak_mb']:.1f} | "
              f"{_ratio(run['peak_mb'], base['peak_mb'])} |")


if __name__ == "__main__":
    main()
