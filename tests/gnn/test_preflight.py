"""Memory preflight: the estimate against what a run measures, the budget check, and the oom record of sml-run."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.gnn_blockquant.config import CompressConfig, GNNRunConfig
from sustainml_exp.families.gnn_blockquant.data import build_graph_data
from sustainml_exp.families.gnn_blockquant.preflight import check_memory, estimate_peak, proxy_graph
from sustainml_exp.families.gnn_blockquant.train import (
    build_model,
    evaluate,
    measure_activation_mb,
    resolved_backend,
    train_step,
)
from sustainml_exp.memory_budget import MEMORY_CHECKS, MemoryPreflightError, device_offers_mb
from sustainml_exp.peak_memory import MIB, peak_live_bytes


def _config(quant: str, lean: bool = False, **knobs) -> GNNRunConfig:
    compress = CompressConfig(quant=quant, bits=2, kept_frac=0.125, G_R=64, vm=False, backend="auto", lean=lean)
    cfg = GNNRunConfig(dataset="synthetic", quant=quant, G_R=64, lean=lean, compress=compress, **knobs)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def graph():
    """A graph twice the larger proxy, so the estimate is an extrapolation, as on a real run (the
    four modes on synthetic_arxiv, measured peak against estimate: scripts/bench_gnn.py --epochs 3)."""
    from sustainml_exp.families.gnn_blockquant.data import GraphShape

    shape = GraphShape(num_nodes=16_000, num_features=128, num_classes=40, num_edges=16_000 * 12, num_train=8_000)
    return build_graph_data(proxy_graph(shape, shape.num_nodes, seed=1))


@pytest.mark.parametrize("quant,lean", [("fp32", False), ("exact", False), ("block", False), ("block", True)])
def test_estimate_extrapolates_act_mem_and_step_peak(graph, quant: str, lean: bool) -> None:
    cfg = _config(quant, lean)
    backend = resolved_backend(cfg, "cpu", graph.shape)
    estimate = estimate_peak(cfg, graph.shape, "cpu", backend)

    model = build_model(cfg, graph, None if backend == "none" else backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    act_mb = measure_activation_mb(model, graph, cfg)
    train_step(model, graph, optimizer, cfg, 1)
    step = max(peak_live_bytes(lambda: train_step(model, graph, optimizer, cfg, 2), "cpu"),
               peak_live_bytes(lambda: evaluate(model, graph), "cpu")) / MIB
    # act_mem_mb is shape-determined: the same byte accounting on the proxies extrapolates to within a row chunk.
    assert estimate.act_mb == pytest.approx(act_mb, rel=0.02)
    assert estimate.step_mb == pytest.approx(step, rel=0.15)
    graph_mb = sum(t.untyped_storage().nbytes() for t in (graph.x, graph.y, graph.train_idx, graph.val_idx,
                                                          graph.test_idx, graph.adj.crow_indices(),
                                                          graph.adj.col_indices(), graph.adj.values(),
                                                          graph.adj_t.values())) / MIB
    # graph_shape's edge count is an upper bound (random pairs repeat), so the estimate may only be above.
    assert graph_mb <= estimate.graph_mb <= 1.1 * graph_mb


def test_estimate_leaves_the_random_state_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    estimate_peak(_config("fp32"), replace(_shape(), num_nodes=50_000), "cpu", "none")
    assert torch.equal(torch.rand(4), expected)


def _shape():
    from sustainml_exp.families.gnn_blockquant.data import graph_shape

    return graph_shape("synthetic")


def test_refusal_is_one_line_with_the_estimate_and_a_compressed_alternative() -> None:
    cfg = _config("fp32", memory_budget_mb=1.0)
    with pytest.raises(MemoryPreflightError) as err:
        check_memory(cfg, _shape(), "cpu", "none")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("needs ~") and ", 0.0 GiB available; quant=block G_R=64 needs ~" in message
    assert err.value.record_fields["est_peak_mb"] > 1.0
    # Block G/R=64 itself: nothing smaller to suggest.
    with pytest.raises(MemoryPreflightError) as err:
        check_memory(_config("block", memory_budget_mb=1.0), _shape(), "cpu", "torch")
    assert "quant=" not in str(err.value)


def test_warn_runs_on_and_off_does_not_compare(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        estimate = check_memory(_config("fp32", memory_budget_mb=1.0, memory_check="warn"), _shape(), "cpu", "none")
    assert estimate.total_mb > 1.0
    assert [r.message for r in caplog.records if r.levelno == logging.WARNING] == [
        f"memory_check=warn: needs ~{estimate.total_mb / 1024:.1f} GiB, 0.0 GiB available; running anyway"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        check_memory(_config("fp32", memory_budget_mb=1.0, memory_check="off"), _shape(), "cpu", "none")
    assert not caplog.records


def test_default_budget_is_what_the_machine_offers() -> None:
    offers = device_offers_mb("cpu", held_mb=0.0)
    assert 0 < offers < float("inf")
    assert device_offers_mb("cpu", held_mb=100.0) == pytest.approx(offers + 100.0, abs=64)


def test_bad_knob_values_name_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="memory_check='maybe' is not allowed; allowed: error, warn, off"):
        _config("block", memory_check="maybe")
    assert MEMORY_CHECKS == ("error", "warn", "off")
    with pytest.raises(ConfigError, match=r"memory_budget_mb=0\.0 is out of range; allowed: \(0\.0, inf\]"):
        _config("block", memory_budget_mb=0.0)


def test_cli_refusal_records_oom_and_prints_one_line(sml_run) -> None:
    proc = sml_run("quant=fp32", "memory_budget_mb=64", "energy=none", "epochs=1")
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sml-run: error: needs ~"), proc.stderr
    assert "0.1 GiB available; quant=block G_R=64 needs ~" in lines[0]
    (path,) = (sml_run.results_dir / "runs" / "gnn_blockquant").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "oom" and record["error"].startswith("MemoryPreflightError: needs ~")
    assert record["est_peak_mb"] > 64 and record["epochs"] == 0
    # Nothing was trained: the refusal came before the graph was loaded.
    assert "test_acc" not in record

    proc = sml_run("memory_check=maybe")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["sml-run: error: memory_check='maybe' is not allowed; allowed: error, warn, off"]
