"""G_R is checked against the graph as soon as it is loaded: a larger block than the graph fails before training."""

from __future__ import annotations

import json

import pytest

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.gnn_blockquant.config import GNNRunConfig


def test_block_rows_are_checked_against_the_node_count() -> None:
    GNNRunConfig(G_R=3000).check_graph_size(3000)  # one block per tensor
    GNNRunConfig(quant="exact", G_R=10**9).check_graph_size(3000)  # exact ignores G_R
    with pytest.raises(ConfigError, match=r"^G_R=3001 is larger than the graph \(dataset=synthetic has 3000 nodes\); "
                                          r"allowed: 1 to 3000 "):
        GNNRunConfig(G_R=3001).check_graph_size(3000)


def test_run_with_G_R_beyond_the_graph_fails_before_training(sml_run) -> None:
    # One row beyond the graph: a version without the check trains and records ok (G_R=1e9 would ask for 64 GB).
    proc = sml_run("G_R=3001", "epochs=2", "energy=none", "progress=log", "threads=1")
    assert proc.returncode == 1
    assert "training block" not in proc.stdout
    (path,) = (sml_run.results_dir / "runs" / "gnn_blockquant").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and record["epochs"] == 0
    assert record["error"].startswith("ConfigError: G_R=3001 is larger than the graph (dataset=synthetic has 3000 "
                                      "nodes); allowed: 1 to 3000")
