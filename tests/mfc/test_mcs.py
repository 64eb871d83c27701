"""MCSSelector on the digits (per-class certificate, multiplicities, determinism, budget) and the bench script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import MCS_STATUSES, MCSConfig, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection import make_selector
from sustainml_exp.families.mfc_coreset.selection.covering import (
    min_cover,
    pairwise_distances,
    verify_certificate,
)

REPO = Path(__file__).resolve().parents[2]
K = 5


def _selector(k: int = K, **mcs):
    return make_selector(MFCRunConfig(dataset="digits", method="mcs", k=k, mcs=MCSConfig(**mcs)))


def _subset(train: TrainSet, n: int) -> TrainSet:
    return TrainSet(x=train.x[:n], y=train.y[:n], n_classes=train.n_classes, dataset=train.dataset)


@pytest.fixture(scope="module")
def digits_subset(digits_train) -> TrainSet:
    # About 70 images per class: the same kind of covering as all 1,797, in a fraction of the MILP time.
    return _subset(digits_train, 700)


@pytest.fixture(scope="module")
def digits_mcs(digits_subset):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _selector().select(digits_subset, K, seed=0)
    finally:
        torch.set_num_threads(threads)


def test_every_class_is_certified_within_eta_by_its_own_centres(digits_subset, digits_mcs) -> None:
    result = digits_mcs
    assert result.images is None and result.indices.dtype == np.int64
    assert np.all(np.diff(result.indices) > 0) and len(result.indices) == K * 10
    info = result.info
    assert info["mcs_certified"] is True and info["mcs_status"] in MCS_STATUSES and info["mcs_gap"] >= 0
    assert 0 < info["eta_mean"] <= info["eta"] and info["mcs_eta_lower"] <= info["eta"]
    assert info["mcs_k_cover"] <= info["mcs_k_greedy"] and info["mcs_k_cover"] + info["mcs_padded"] == K * 10
    assert info["mcs_lower_bound"] <= info["mcs_k_cover"]
    gaps = [float(g) for g in info["mcs_class_gaps"].split()]
    assert len(gaps) == 10 and max(gaps) == pytest.approx(info["mcs_gap"], abs=1e-4)
    assert info["mcs_undecided"] <= info["mcs_steps"] and info["mcs_highs_decisions"] <= info["mcs_steps"]
    if info["mcs_status"] == "optimal":
        assert info["mcs_time_limited_classes"] == 0 and info["mcs_gap"] == 0
    labels = digits_subset.y.numpy()
    for c in range(10):
        members = digits_subset.class_indices(c)
        centres = result.indices[labels[result.indices] == c]
        assert len(centres) == K
        positions = np.searchsorted(members, centres)
        # Recomputed from the pixels: every image of the class lies within eta of a centre of its own class.
        assert verify_certificate(digits_subset.x[torch.as_tensor(members)], positions, info["eta"], points=True)


def test_weights_are_multiplicities_that_count_each_class(digits_subset, digits_mcs) -> None:
    result = digits_mcs
    labels = digits_subset.y.numpy()
    assert result.weights.shape == result.indices.shape and np.all(result.weights >= 1)
    for c in range(10):
        members = digits_subset.class_indices(c)
        mine = labels[result.indices] == c
        assert result.weights[mine].sum() == len(members)
        dist = pairwise_distances(digits_subset.x[torch.as_tensor(members)])
        nearest = dist[:, torch.as_tensor(np.searchsorted(members, result.indices[mine]))].argmin(1)
        assert np.array_equal(np.bincount(nearest.numpy(), minlength=K), result.weights[mine])


def test_exact_beats_or_ties_greedy_and_each_class_is_at_its_smallest_eta(digits_subset, digits_mcs,
                                                                          one_thread) -> None:
    exact = digits_mcs
    greedy = _selector(solver="greedy").select(digits_subset, K, seed=0)
    assert greedy.info["mcs_status"] == "greedy" and greedy.info["mcs_highs_decisions"] == 0
    assert exact.info["mcs_status"] == "optimal" and exact.info["mcs_gap"] == 0 and exact.info["mcs_padded"] == 0
    assert exact.info["mcs_class_gaps"] == " ".join(["0"] * 10)
    assert exact.info["eta"] <= greedy.info["eta"] and exact.info["mcs_k_cover"] <= exact.info["mcs_k_greedy"]
    # Greedy's certified bracket holds the proven optimum.
    assert greedy.info["mcs_eta_lower"] <= exact.info["eta"] <= greedy.info["eta"]
    # Proven optimal and unpadded, the worst class's radius is eta, and one distance below it needs more than K.
    radii = [_class_radius(digits_subset, exact.indices, c) for c in range(10)]
    assert max(radii) == exact.info["eta"]
    dist = pairwise_distances(digits_subset.x[torch.as_tensor(digits_subset.class_indices(int(np.argmax(radii))))])
    below = min_cover(dist, float(dist[dist < exact.info["eta"]].max()))
    assert below.status == "optimal" and below.k > K


def _class_radius(train: TrainSet, indices: np.ndarray, c: int) -> float:
    members = train.class_indices(c)
    mine = indices[train.y.numpy()[indices] == c]
    dist = pairwise_distances(train.x[torch.as_tensor(members)])
    return float(dist[:, torch.as_tensor(np.searchsorted(members, mine))].min(1).values.max())


def test_same_seed_same_selection(digits_train, one_thread) -> None:
    subset = _subset(digits_train, 300)
    first = _selector(k=3).select(subset, 3, seed=7)
    again = _selector(k=3).select(subset, 3, seed=7)
    assert np.array_equal(first.indices, again.indices) and np.array_equal(first.weights, again.weights)
    timing = ("mcs_distance_s", "mcs_solve_s")
    assert {k: v for k, v in first.info.items() if k not in timing} == {
        k: v for k, v in again.info.items() if k not in timing}


def test_k_larger_than_a_class_is_a_config_error(digits_train) -> None:
    subset = _subset(digits_train, 100)
    smallest = int(np.bincount(subset.y.numpy(), minlength=10).min())
    with pytest.raises(ConfigError, match=f"k={smallest + 1} is larger than class"):
        _selector(k=smallest + 1).select(subset, smallest + 1, seed=0)


def test_bench_script_runs_and_its_json_parses(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_mfc.py"), "--dataset", "synthetic", "--n", "300", "--k", "5",
         "10", "--time-limit", "2", "--naive-sample", "60", "--device", "cpu", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reached (s)" in proc.stdout and "synthetic" in proc.stdout and "decisions by" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["n"] == 300 and figures["dim"] == 784 and figures["distance_max_abs_diff"] < 1e-4
    assert figures["naive_class_s_extrapolated"] > 0
    searches = figures["searches"]
    assert [(s["k"], s["solver"]) for s in searches] == [(5, "greedy"), (5, "exact"), (10, "greedy"), (10, "exact")]
    for search in searches:
        assert search["certified"] is True and search["status"] in MCS_STATUSES
        assert search["cover_size"] <= search["k_greedy"] and search["cover_lower_bound"] <= search["cover_size"]
        assert search["cover_size"] <= search["k"]
        assert search["kcenter_radius"] / 2 <= search["eta_lower"] <= search["eta"] <= search["kcenter_radius"]
        assert search["gap"] == pytest.approx((search["eta"] - search["eta_lower"]) / search["eta"])
    # The target applies at k = 10 (10 %); none is set for k = 5.
    assert searches[0]["target_gap"] is None and searches[2]["target_gap"] == 0.10
