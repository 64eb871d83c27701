"""End to end: sml-run in a subprocess on the embedded default graph, then sml-tables on its records."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import SML_RUN, SML_TABLES, run_cli
from sustainml_exp.results import COMMON_COLUMNS

QUICK = ("epochs=12", "warmup_epochs=2", "energy=none", "progress=log")


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs" / "gnn_blockquant").glob("*.json"))]


@pytest.fixture(scope="module")
def quant_mode_runs(tmp_path_factory) -> Path:
    """One run per quant mode (+VM) on the embedded default, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("e2e")
    results = tmp / "results"
    for args in (["quant=fp32"], ["quant=exact"], ["quant=block", "G_R=64"], ["quant=exact", "vm=true"]):
        proc = run_cli(SML_RUN, *args, *QUICK, f"results_dir={results}", cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def test_each_quant_mode_records_one_complete_row(quant_mode_runs: Path) -> None:
    records = _records(quant_mode_runs)
    assert sorted((r["quant"], r["vm"]) for r in records) == [
        ("block", False), ("exact", False), ("exact", True), ("fp32", False)]
    for r in records:
        assert set(COMMON_COLUMNS) <= set(r)
        assert r["status"] == "ok" and r["error"] == ""
        assert r["epochs"] == 12 and r["epochs_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert 0 < 10 / r["epochs_per_s"] <= r["train_s"] < r["wall_s"]  # train_s includes the warm-up epochs
        assert 0.0 <= r["test_acc"] <= 1.0 and r["act_mem_mb"] > 0
        assert r["config"]["seed"] == 0 and r["versions"]["torch"] and r["git_sha"]
        assert r["energy_backend"] == "none" and r["energy_kwh"] is None
    by_quant = {(r["quant"], r["vm"]): r for r in records}
    # Compression must cut the saved activations by far more than 4x on the same graph.
    assert by_quant[("block", False)]["act_mem_mb"] < by_quant[("fp32", False)]["act_mem_mb"] / 8
    assert by_quant[("block", False)]["effective_G_R"].startswith("L0 x:64 agg:64")


def test_sml_tables_merges_records_and_writes_tables(quant_mode_runs: Path) -> None:
    proc = run_cli(SML_TABLES, "--results-dir", str(quant_mode_runs), cwd=quant_mode_runs.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(quant_mode_runs / "gnn_blockquant.csv")
    assert len(frame) == 4 and list(frame.columns[: len(COMMON_COLUMNS)]) == list(COMMON_COLUMNS)
    for name in ("table4.md", "table4.tex", "table5.md", "table5.tex", "figure9.png", "figure10.png"):
        assert (quant_mode_runs / "tables" / name).stat().st_size > 0, name


def test_default_run_learns_well_above_chance(sml_run) -> None:
    """The quick-start command itself (embedded default, block INT2 G/R=64), 100 epochs."""
    started = time.perf_counter()
    proc = sml_run("experiment=gnn_blockquant", "G_R=64", "energy=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = _records(sml_run.results_dir)
    assert record["epochs"] == 100 and record["G_R"] == 64 and record["quant"] == "block"
    chance = 1.0 / 10
    assert record["test_acc"] > 3 * chance, record["test_acc"]
    assert time.perf_counter() - started < 300


def test_bad_input_exits_before_any_work_and_writes_nothing(sml_run) -> None:
    for args in (["G_R=0"], ["bits=3"], ["kept_frac=2"], ["vm=true", "bits=4"], ["G_RR=1"]):
        proc = sml_run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("sml-run: error: "), proc.stderr
    assert not sml_run.results_dir.exists()


def test_missing_dataset_records_a_failed_row(sml_run) -> None:
    proc = sml_run("dataset=ogbn-arxiv", "energy=none")
    assert proc.returncode == 1
    (record,) = _records(sml_run.results_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith("DataMissingError: ") and "download=true" in record["error"]
    assert "\n" not in record["error"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_exits_promptly_with_one_line_and_leaves_no_record(tmp_path: Path, signum, status) -> None:
    results = tmp_path / "results"
    proc = subprocess.Popen([str(SML_RUN), "epochs=100000", "energy=none", "progress=log", "threads=1",
                             f"results_dir={results}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training is under way
            if "training block on synthetic" in line:
                break
        sent = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        # Promptness is the point (a run that ignores Ctrl-C until training ends); the bound allows a loaded machine.
        assert time.monotonic() - sent < 20
    finally:
        proc.kill()
    assert proc.returncode == status
    assert stderr.strip().splitlines() == [
        f"sml-run: interrupted by {signum.name}: the running job wrote no record, finished jobs keep theirs"]
    leftovers = [p for p in results.rglob("*") if p.is_file() and (p.suffix in (".json", ".tmp"))]
    assert leftovers == []
