"""End to end: sml-run for every selection method on the embedded digits (one Hydra multirun), then sml-tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import SML_RUN, SML_TABLES, run_cli
from sustainml_exp.families.mfc_coreset.config import METHODS

COMMON = ("experiment=mfc_coreset", "energy=none", "progress=log")
# Fewer APGD restarts and iterations than the paper's 5 x 100, and a few condensation iterations, keep the whole
# sweep inside the CI budget.
SHORT = ("attack.aa_restarts=1", "attack.aa_steps=25", "condense.iterations=3", "condense.batch_real=32",
         "condense.gm_outer=2", "condense.gm_inner=1",
         "proxy.epochs=3")


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs" / "mfc_coreset").glob("*.json"))]


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mfc_e2e")
    results = tmp / "results"
    proc = run_cli(SML_RUN, "-m", *COMMON, *SHORT, f"method={','.join(METHODS)}", "k=20",
                   f"results_dir={results}", cwd=tmp, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return results


def test_every_method_records_one_complete_row(method_runs: Path) -> None:
    records = {r["method"]: r for r in _records(method_runs)}
    assert sorted(records) == sorted(METHODS)
    for method, record in records.items():
        assert record["status"] == "ok" and record["error"] == "", (method, record["error"])
        assert record["dataset"] == "digits" and record["model"] == "mlp" and record["train"] == "pgd_linf"
        assert record["eps"] == pytest.approx(0.1) and record["eps_l2"] == pytest.approx(0.1 * (128 / (np.pi * np.e))
                                                                                         ** 0.5)
        expected = record["n_train_full"] if method == "full" else 20 * 10
        assert record["n_selected"] == expected, method
        for attack in ("pgd_linf", "pgd_l2", "aa", "apgd_ce", "apgd_dlr"):
            assert 0.0 <= record[f"rob_acc_{attack}"] <= record["std_acc"], (method, attack)
        assert record["rob_acc_aa"] <= min(record["rob_acc_apgd_ce"], record["rob_acc_apgd_dlr"])
        assert record["epochs"] == 20 and record["select_s"] >= 0 and record["n_params"] > 0
    # Trained on all of digits, the MLP must be far above chance (10 %) clean and keep some linf robustness.
    assert records["full"]["std_acc"] > 0.85 and records["full"]["rob_acc_pgd_linf"] > 0.3


def test_mcs_records_its_covering_and_the_selection_is_kept(method_runs: Path) -> None:
    mcs = next(r for r in _records(method_runs) if r["method"] == "mcs")
    assert mcs["eta"] > 0 and mcs["mcs_certified"] is True and mcs["mcs_status"] in ("optimal", "feasible")
    assert mcs["mcs_gap"] >= 0
    selection = np.load(mcs["artifacts"]["selection"])
    assert len(selection["indices"]) == 200 and len(np.unique(selection["indices"])) == 200
    assert selection["weights"].sum() == pytest.approx(mcs["n_train_full"])
    dm = next(r for r in _records(method_runs) if r["method"] == "dm")
    condensed = torch.load(dm["artifacts"]["condensed"], weights_only=True)
    assert condensed["images"].shape == (200, 1, 8, 8)
    assert 0.0 <= float(condensed["images"].min()) and float(condensed["images"].max()) <= 1.0


def test_sml_tables_writes_table_1_and_the_k_figure(method_runs: Path) -> None:
    proc = run_cli(SML_TABLES, "--results-dir", str(method_runs), cwd=method_runs.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(method_runs / "mfc_coreset.csv")
    assert sorted(frame["method"]) == sorted(METHODS)
    tables = method_runs / "tables"
    for name in ("table1.md", "table1.tex", "figure_k_digits_mlp.png"):
        assert (tables / name).stat().st_size > 0, name
    table1 = (tables / "table1.md").read_text()
    rand = frame[frame["method"] == "rand"].iloc[0]
    assert f"{100 * rand['std_acc']:.2f}" in table1


def test_weighted_generalized_mcs_records_its_class_radii(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_cli(SML_RUN, *COMMON, "method=mcs", "k=5", "epochs=2", "train=pgd_l2", "weighted=true",
                   "generalized=true", "attack.names=[pgd_l2]", f"results_dir={results}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (record,) = _records(results)
    assert record["status"] == "ok" and record["weighted"] is True and record["generalized"] is True
    # eps stays the l2 budget; each class trains with its own covering radius, the largest being MCS's eta.
    assert record["eps_train"] == pytest.approx(record["eps_l2"])
    radii = record["eta_train_per_class"]
    assert len(radii) == 10 and max(radii) == pytest.approx(record["eta_train_max"])
    assert record["eta_train_max"] <= record["eta"] + 1e-5 and min(radii) < max(radii)
    assert "rob_acc_pgd_l2" in record and "rob_acc_aa" not in record


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method=coreset", "method='coreset' is not allowed; allowed: full, rand, mcs,"),
        ("dataset=imagenet", "dataset='imagenet' is not allowed; allowed: digits, mnist, fashion_mnist,"),
        ("model=vit", "model='vit' is not allowed; allowed: mlp, convnet, resnet18"),
        ("attack.names=[fgsm]", "attack.names='fgsm' is not allowed; allowed: pgd_linf, pgd_l2, aa"),
        ("k=0", "k=0 is out of range; allowed: [1, inf]"),
        ("eps_linf=-0.1", "eps_linf=-0.1 is out of range; allowed: [0.0, inf]"),
        ("weighted=true method=rand", "weighted=true needs a method with selection weights"),
        ("generalized=true train=standard", "generalized=true needs adversarial training"),
        ("k=5001 dataset=cifar10", "k=5001 is larger than the smallest class of cifar10 (5000 training images)"),
        ("k=1000", "k=1000 is larger than the smallest class of digits"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    proc = run_cli(SML_RUN, *COMMON, *override.split(), f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                   timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "results").exists()
