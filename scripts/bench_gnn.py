#!/usr/bin/env python
"""PyG's SAGEConv FP32 vs our FP32 vs EXACT INT2 vs block INT2 (G/R=64, +VM, lean), side by side on one graph:
epochs/s, act_mem_mb, peak memory (overall and per phase), and with --profile where a training step's time goes.

Usage: python scripts/bench_gnn.py [--dataset synthetic_arxiv] [--steps 3] [--rounds 3] [--device auto]
                                   [--compress-backend auto] [--profile] [--threads N] [--configs A,B]
       python scripts/bench_gnn.py --epochs N [--dataset synthetic_products] [--configs A,B] [--data-dir D]

With --epochs, each configuration instead runs as a user runs it - ``sml-run`` in its own process, the dataset's
preset (gnn_products for the products graphs), N epochs - one after another, so that each has the machine's memory
to itself: the table shows the memory preflight's estimate beside the measured peak (resident high-water mark of
the training loop, not above a baseline), act_mem_mb and epochs/s, or the one line with which the preflight
refused a configuration that would not fit.

Speed is measured in one process with the configurations interleaved round by round (so drift in clock or load
hits all of them alike); the median of each configuration's rounds is reported, and the compressed rows' ratios are
to the faster FP32 row (ours or PyG's). Each configuration's backend is chosen, self-checked and (torch-compiled)
compiled before its first step, and two untimed steps precede the timed ones. Peak memory: the most a
configuration's timed steps held above what was held before them (CUDA allocator peak, or on CPU the resident
high-water mark, reset before each configuration's steps). Per phase (one more step, then one evaluation): the
peak within each phase and what is still held at its end, both above the step's start.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from sustainml_exp.compress.autograd import SPMM_LABEL
from sustainml_exp.compress.qtensor import DEQUANTIZE_LABEL, QUANTIZE_LABEL
from sustainml_exp.families.gnn_blockquant.config import COMPRESS_BACKENDS, CompressConfig, GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import GraphData, load_graph
from sustainml_exp.families.gnn_blockquant.pyg_baseline import PygGraphSAGE, pyg_adj_t
from sustainml_exp.families.gnn_blockquant.train import (
    TRAIN_PHASES,
    build_model,
    evaluate,
    measure_activation_mb,
    resolved_backend,
    train_step,
)
from sustainml_exp.peak_memory import PeakMemory, PhasePeaks

PYG = "PyG SAGEConv FP32"
FP32 = "FP32"
BLOCK = "INT2 block G/R=64"
CONFIGS = {
    PYG: dict(quant="fp32", vm=False, lean=False),
    FP32: dict(quant="fp32", vm=False, lean=False),
    "EXACT INT2 D/R=8": dict(quant="exact", vm=False, lean=False),
    BLOCK: dict(quant="block", vm=False, lean=False),
    "INT2 block G/R=64 + VM": dict(quant="block", vm=True, lean=False),
    "INT2 block G/R=64 lean": dict(quant="block", vm=False, lean=True),
}
# Row order of --epochs (PyG's row needs the in-process setup of the default mode).
SCALE_CONFIGS = (FP32, "EXACT INT2 D/R=8", BLOCK, "INT2 block G/R=64 lean")
PRESETS = {"synthetic_products": "gnn_products", "ogbn-products": "gnn_products"}  # else gnn_blockquant
EVAL_PHASE = "evaluation"
# Profile categories, innermost first: a labelled range (or, for PyG's own sparse ops, an op name) claims the
# self time of everything under it; the rest goes to the phase it ran in.
PROFILE_CATEGORIES = (SPMM_LABEL, QUANTIZE_LABEL, DEQUANTIZE_LABEL)
_SPARSE_OP = re.compile(r"sparse", re.IGNORECASE)


def make_config(name: str, dataset: str, backend: str = "auto") -> GNNRunConfig:
    knobs = CONFIGS[name]
    compress = CompressConfig(quant=knobs["quant"], bits=2, kept_frac=0.125, G_R=64, vm=knobs["vm"], backend=backend,
                              lean=knobs["lean"])
    cfg = GNNRunConfig(dataset=dataset, quant=knobs["quant"], vm=knobs["vm"], G_R=64, lean=knobs["lean"],
                       compress_backend=backend, compress=compress)
    cfg.validate()
    return cfg


def build(name: str, cfg: GNNRunConfig, graph: GraphData, device: str) -> tuple[torch.nn.Module, str]:
    """The configuration's model and the name of the backend it compresses with ('none': nothing compressed)."""
    torch.manual_seed(0)
    if name == PYG:
        m = cfg.model
        model = PygGraphSAGE(graph.x.shape[1], m.hidden, graph.num_classes, m.num_layers, m.dropout, m.batch_norm,
                             pyg_adj_t(graph))
        return model.to(device), "none"
    backend = resolved_backend(cfg, device, graph.shape)
    return build_model(cfg, graph, None if backend == "none" else backend).to(device), backend


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _ratio(value: float, base: float) -> str:
    # A tiny graph can stay within pages already held, so FP32's peak above baseline may be 0.
    return f"{value / base:.3f}" if base > 0 else "n/a"


def phase_memory(run: dict[str, Any], graph: GraphData, device: str) -> dict[str, Any]:
    meter = PhasePeaks(device)
    meter.start()
    run["step"] += 1
    train_step(run["model"], graph, run["opt"], run["cfg"], run["step"], phase=meter.phase)
    with meter.phase(EVAL_PHASE):
        evaluate(run["model"], graph)
    return dict(meter.phases)


def profile_step(run: dict[str, Any], graph: GraphData) -> dict[str, float]:
    """Milliseconds of one training step's CPU time per category (self times, so nothing counts twice)."""
    run["step"] += 1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(run["model"], graph, run["opt"], run["cfg"], run["step"], phase=record_function)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name in PROFILE_CATEGORIES + TRAIN_PHASES:
            continue  # the labels themselves: their self time is Python bookkeeping, counted below as "other"
        totals[_category(event)] += event.self_cpu_time_total / 1000
    return dict(totals)


def _category(event: Any) -> str:
    phase = "other"
    node = event
    found = None
    while node is not None:
        if found is None and (node.name in PROFILE_CATEGORIES or _SPARSE_OP.search(node.name)):
            found = SPMM_LABEL if _SPARSE_OP.search(node.name) else node.name
        if node.name in TRAIN_PHASES:
            phase = node.name
        node = node.cpu_parent
    return found or phase


def run_scale(args: argparse.Namespace, chosen: list[str]) -> None:
    """--epochs: every configuration through sml-run in its own process; a table of their records."""
    sml_run = Path(sys.executable).with_name("sml-run")
    preset = PRESETS.get(args.dataset, "gnn_blockquant")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gnn_") as results:
        for name in chosen:
            knobs = CONFIGS[name]
            overrides = [f"experiment={preset}", f"dataset={args.dataset}", f"epochs={args.epochs}",
                         f"quant={knobs['quant']}", f"vm={str(knobs['vm']).lower()}",
                         f"lean={str(knobs['lean']).lower()}", "G_R=64", f"device={args.device}",
                         f"compress_backend={args.compress_backend}", f"data_dir={Path(args.data_dir).resolve()}",
                         f"results_dir={results}", "energy=none", "progress=off", "activation_stats=false",
                         "rerun=true"]
            if args.threads is not None:
                overrides.append(f"threads={args.threads}")
            done = subprocess.run([str(sml_run), *overrides], capture_output=True, text=True)
            records = sorted(Path(results, "runs").glob("*/*.json"), key=lambda p: p.stat().st_mtime)
            if not records:
                raise SystemExit(f"{name}: sml-run wrote no record (exit {done.returncode}): {done.stderr[-2000:]}")
            record = json.loads(records[-1].read_text())
            records[-1].unlink()
            record["stderr_error"] = next((line for line in done.stderr.splitlines()
                                           if line.startswith("sml-run: error:")), "")
            rows.append((name, record))
            print(f"{name}: {record['status']}", flush=True)
    print(f"\ndataset={args.dataset} preset={preset} epochs={args.epochs} device={rows[0][1]['device']} "
          f"torch={torch.__version__}; peak = the training loop's resident high-water mark (or CUDA allocator peak)")
    print("\n| config | status | backend | e/s | act MB | est. peak MB | measured peak MB | est. / measured | "
          "test acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        if r["status"] != "ok":
            print(f"| {name} | {r['status']} | | | | {r.get('est_peak_mb', float('nan')):.0f} | | | "
                  f"{r['stderr_error'] or r['error']} |")
            continue
        print(f"| {name} | ok | {r['compress_backend']} | {r['epochs_per_s']:.4f} | {r['act_mem_mb']:.2f} | "
              f"{r['est_peak_mb']:.0f} | {r['peak_mem_mb']:.0f} | {r['est_peak_mb'] / r['peak_mem_mb']:.3f} | "
              f"{r['test_acc']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic_arxiv")
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per config per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--compress-backend", default="auto", choices=COMPRESS_BACKENDS,
                        help="backend of the compressed rows (auto: torch-compiled on a large CPU graph)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one training step per config (torch.profiler, CPU time by category)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated rows to run (default: all; {PYG!r} and {FP32!r} always run), with "
                             f"--epochs: any of {', '.join(SCALE_CONFIGS)} (default: those)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="run each configuration through sml-run for this many epochs (see above)")
    args = parser.parse_args()
    allowed = SCALE_CONFIGS if args.epochs is not None else tuple(CONFIGS)
    chosen = [name.strip() for name in (args.configs or ",".join(allowed)).split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"unknown configs {unknown}; allowed: {', '.join(allowed)}")
    if args.epochs is not None:
        run_scale(args, chosen)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    graph = load_graph(args.dataset, Path(args.data_dir), seed=0).to(device)
    runs = {}
    for name in [name for name in CONFIGS if name in {PYG, FP32, *chosen}]:
        cfg = make_config(name, args.dataset, args.compress_backend)
        model, backend = build(name, cfg, graph, device)
        act_mb = measure_activation_mb(model, graph, cfg)
        runs[name] = dict(cfg=cfg, model=model, backend=backend, act_mb=act_mb, rates=[], peak_mb=0.0, step=0,
                          opt=torch.optim.Adam(model.parameters(), lr=cfg.model.lr))
    for run in runs.values():  # warm-up: allocator, kernels, caches (and any compilation left)
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
    for run in runs.values():
        run["phases"] = phase_memory(run, graph, device)
        if args.profile:
            run["profile"] = profile_step(run, graph)

    eps = {name: statistics.median(run["rates"]) for name, run in runs.items()}
    best_fp32 = max(eps[PYG], eps[FP32])
    base = runs[FP32]
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"dataset={args.dataset} device={device} ({gpu}) steps={args.steps} rounds={args.rounds} "
          f"torch={torch.__version__}; our FP32 / PyG FP32 e/s = {eps[FP32] / eps[PYG]:.3f}")
    print(f"\n| config | backend | e/s | e/s ratio to best FP32 | act MB | act ratio to FP32 | "
          f"peak MB above baseline ({base['peak_source']}) | peak ratio to FP32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run['backend']} | {eps[name]:.3f} | {eps[name] / best_fp32:.3f} | {run['act_mb']:.2f} | "
              f"{run['act_mb'] / base['act_mb']:.4f} | {run['peak_mb']:.1f} | "
              f"{_ratio(run['peak_mb'], base['peak_mb'])} |")

    phases = (*TRAIN_PHASES, EVAL_PHASE)
    print("\nMemory per phase, MB above the step's start: peak / held at the phase's end")
    print("| config | " + " | ".join(phases) + " |")
    print("|---|" + "---|" * len(phases))
    for name, run in runs.items():
        cells = [f"{run['phases'][p].peak_mb:.1f} / {run['phases'][p].end_mb:.1f}" for p in phases]
        print(f"| {name} | " + " | ".join(cells) + " |")

    if args.profile:
        columns = ("forward", QUANTIZE_LABEL, SPMM_LABEL, "backward", DEQUANTIZE_LABEL, "optimizer", "other")
        print("\nOne training step's CPU time by category, ms (torch.profiler self times; profiling adds overhead)")
        print("| config | step | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for name, run in runs.items():
            prof = run["profile"]
            print(f"| {name} | {sum(prof.values()):.0f} | " + " | ".join(f"{prof.get(c, 0.0):.0f}" for c in columns)
                  + " |")


if __name__ == "__main__":
    main()
