"""End to end: sml-run for the method and both baselines on the embedded synthetic_nuclei tiles, then sml-tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_helpers import SML_RUN, SML_TABLES, run_cli
from sustainml_exp.families.csl_segmentation.data import load_seg_dataset
from sustainml_exp.families.csl_segmentation.evaluate import dice

COMMON = ("experiment=csl_segmentation", "energy=none", "progress=log")


def _records(results: Path) -> dict[str, dict]:
    return {r["method"]: r for r in (json.loads(p.read_text())
                                     for p in sorted((results / "runs" / "csl_segmentation").glob("*.json")))}


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("csl_e2e")
    results = tmp / "results"
    # The threshold (no training) runs the paper's selection protocol: every training image, chosen on its labels.
    for method, selection in (("csl", "val_split"), ("threshold", "train_labels"), ("supervised", "val_split")):
        proc = run_cli(SML_RUN, *COMMON, f"method={method}", f"selection={selection}", f"results_dir={results}",
                       cwd=tmp)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return results


def _all_nuclei_dice() -> float:
    """Dice of predicting every pixel as nucleus: what a method that learnt nothing gets at best."""
    test = load_seg_dataset("synthetic_nuclei", Path(".")).test
    return float(np.mean([dice(np.ones_like(img.mask.numpy()), img.mask.numpy()) for img in test]))


def test_each_method_records_one_complete_row(method_runs: Path) -> None:
    records = _records(method_runs)
    assert sorted(records) == ["csl", "supervised", "threshold"]
    for record in records.values():
        assert record["status"] == "ok" and record["error"] == "", record["error"]
        assert record["dataset"] == "synthetic_nuclei" and record["n_test"] == 8
        if record["selection"] == "train_labels":
            assert record["n_train"] == record["n_val"] == 24
        else:
            assert record["n_train"] + record["n_val"] == 24 and record["n_val"] >= 1
        assert len(record["test_dice_per_image"]) == 8 and 0 < record["train_s"] < record["wall_s"]
        assert record["test_dice"] == pytest.approx(np.mean(record["test_dice_per_image"]))
    csl, supervised, threshold = records["csl"], records["supervised"], records["threshold"]
    assert csl["n_params"] == 7372 and csl["n_params_with_featuriser"] == 7372 + 3386
    assert supervised["n_params"] == 7372 - 3 * 9 and supervised["channel"] == 0
    assert 0 <= csl["channel"] < 4 and 1 <= csl["best_epoch"] <= csl["epochs"] == 40
    assert csl["steps"] == 40 * 2 and 0 <= csl["skipped_steps"] < csl["steps"]
    assert threshold["channel"] == -1 and 0.0 < threshold["threshold_value"] < 1.0
    overlay = np.load(csl["artifacts"]["overlay"], allow_pickle=False)
    assert overlay["pred"].shape == overlay["truth"].shape == (3, 320, 320)


def test_self_supervised_dice_is_far_above_chance(method_runs: Path) -> None:
    records = _records(method_runs)
    chance = _all_nuclei_dice()
    assert records["csl"]["test_dice"] > chance + 0.15, (records["csl"]["test_dice"], chance)
    assert records["supervised"]["test_dice"] > chance + 0.15


def test_sml_tables_writes_tables_2_and_3_and_the_overlay(method_runs: Path) -> None:
    proc = run_cli(SML_TABLES, "--results-dir", str(method_runs), cwd=method_runs.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(method_runs / "csl_segmentation.csv")
    assert sorted(frame["method"]) == ["csl", "supervised", "threshold"]
    tables = method_runs / "tables"
    for name in ("table2.md", "table2.tex", "table3.md", "table3.tex", "figure7_synthetic_nuclei.png"):
        assert (tables / name).stat().st_size > 0, name
    table3 = (tables / "table3.md").read_text()
    assert f"{_records(method_runs)['csl']['test_dice']:.4f}" in table3


def test_patch_larger_than_crop_is_refused_in_one_line(sml_run) -> None:
    proc = sml_run(*COMMON, "crop_size=64", "patch_size=80")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sml-run: error: patch_size=80 is larger than crop_size=64; "
                                   "allowed: patch_size <= crop_size")


def test_missing_monuseg_records_a_failed_row_naming_where_to_get_it(sml_run) -> None:
    proc = sml_run(*COMMON, "dataset=monuseg")
    assert proc.returncode == 1
    (record,) = _records(sml_run.results_dir).values()
    assert record["status"] == "failed" and record["error"].startswith("DataMissingError")
    assert "monuseg.grand-challenge.org" in record["error"]
