"""The benchmarks under scripts/ run end to end on tiny CPU shapes (their figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_kernels_times_the_torch_references_on_cpu() -> None:
    out = _run("bench_kernels.py", "--device", "cpu", "--shapes", "flickr", "--rows-scale", "0.001")
    for op in ("quantize_pack", "unpack_dequantize", "project_quantize_pack", "relu_pack", "dropout_pack",
               "masked_scale", "unpack_mask"):
        assert f"| {op}" in out
    assert "copy bandwidth" in out


def test_bench_kernels_rejects_an_unknown_shape_in_one_line() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_kernels.py"), "--device", "cpu", "--shapes", "cora"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown shapes ['cora']; allowed: arxiv, flickr, large"


def test_bench_linear_backward_memory_orders_the_variants() -> None:
    out = _run("bench_linear_backward_memory.py", "--rows", "20000")
    peaks = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()
             if line.startswith("| ") and not line.startswith("| weight")}
    materialised = next(v for k, v in peaks.items() if "materialised" in k)
    chunked = next(v for k, v in peaks.items() if k.startswith("compressed, chunked"))
    # 20000 x 128 fp32 = 9.8 MB must show up in the materialised variant and not in the chunked one.
    assert materialised > chunked + 5.0


def test_bench_gnn_reports_ratios_phases_and_a_profile() -> None:
    out = _run("bench_gnn.py", "--dataset", "synthetic", "--steps", "1", "--rounds", "1", "--device", "cpu",
               "--profile", "--configs", "INT2 block G/R=64", "--threads", "1")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"PyG SAGEConv FP32", "FP32", "INT2 block G/R=64"} <= set(rows)
    assert "lean" not in out  # --configs chose the rows
    assert "our FP32 / PyG FP32 e/s" in out
    assert "| config | forward | backward | optimizer | evaluation |" in out
    assert "| config | step | forward | quantize/pack | spmm | backward | dequantize | optimizer | other |" in out


def test_bench_csl_compares_the_vectorised_loss_with_the_loop_oracle() -> None:
    out = _run("bench_csl.py", "--device", "cpu", "--steps", "1", "--warmup", "0", "--crop", "48", "--patch", "16",
               "--stride", "8", "--batch", "2", "--threads", "1")
    assert "| training step" in out and "| sampler + loss" in out
    assert "projected 300-epoch MoNuSeg training" in out


@pytest.mark.slow
def test_interrupt_latency_ends_a_training_run_with_the_signals_status() -> None:
    out = _run("interrupt_latency.py", "--cases", "gnn", "--signal", "SIGTERM", "--delays", "12")
    (row,) = [line for line in out.splitlines() if line.startswith("| gnn |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["gnn", "12", "SIGTERM", "143"] and float(cells[4]) < 60
