"""Slow: sml-run trains on the full-size arxiv-shaped graph (the paper's protocol and model), FP32 against
block-wise INT2, and the recorded memory and accuracy columns behave as Table 4 says they should."""

from __future__ import annotations

import json

import pytest

from cli_helpers import SML_RUN, run_cli

# Two full-size trainings in one fixture, each bounded by run_cli's own 1200 s: the suite's 900 s default is too short.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * 1200 + 60)]

ARXIV_CLASSES = 40


@pytest.fixture(scope="module")
def arxiv_runs(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("arxiv")
    results = tmp / "results"
    for quant in ("fp32", "block"):
        proc = run_cli(SML_RUN, "dataset=synthetic_arxiv", f"quant={quant}", "G_R=64", "epochs=6",
                       "warmup_epochs=1", "energy=none", "progress=log", f"results_dir={results}",
                       f"data_dir={tmp / 'data'}", cwd=tmp, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (results / "runs" / "gnn_blockquant").glob("*.json")]
    return {r["quant"]: r for r in records}


def test_full_size_runs_learn(arxiv_runs: dict[str, dict]) -> None:
    for record in arxiv_runs.values():
        assert record["status"] == "ok"
        assert record["num_nodes"] == 169_343
        assert record["test_acc"] > 2 / ARXIV_CLASSES


def test_block_int2_stores_over_30x_less_than_fp32(arxiv_runs: dict[str, dict]) -> None:
    fp32, block = arxiv_runs["fp32"]["act_mem_mb"], arxiv_runs["block"]["act_mem_mb"]
    assert fp32 == pytest.approx(786.22, abs=0.05)  # Table 4's FP32 figure: the layout is identical
    assert block < 25.56  # Table 4's block G/R=64 figure, which kept a larger FP32 tail
    assert fp32 / block > 30
