"""Coreset baselines (full, rand, kcenter, herding, craig, gradmatch, submod) on the 1,797 digits: the budget and
format every selector must meet, and for each method the property it optimises, compared against random subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import MFCRunConfig, ProxyConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection import make_selector
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult
from sustainml_exp.families.mfc_coreset.selection.craig import craig_similarity
from sustainml_exp.families.mfc_coreset.selection.gradmatch import best_weights, omp_nonnegative, relative_residual
from sustainml_exp.families.mfc_coreset.selection.herding import herd
from sustainml_exp.families.mfc_coreset.selection.proxy import Proxy, embeddings, last_layer_gradients, train_proxy
from sustainml_exp.families.mfc_coreset.selection.submod import (
    cosine_similarity,
    facility_location_objective,
    graph_cut_objective,
    greedy_facility_location,
    greedy_graph_cut,
)

K = 5
SEED = 0
RANDOM_SEEDS = range(1, 6)
SELECTORS = ("rand", "kcenter", "herding", "craig", "gradmatch", "submod")
WEIGHTED = ("craig", "gradmatch")


def _cfg(method: str, **overrides) -> MFCRunConfig:
    return MFCRunConfig(dataset="digits", method=method, k=K, proxy=ProxyConfig(epochs=1), **overrides)


def _select(method: str, train: TrainSet, seed: int = SEED, **overrides) -> SelectionResult:
    return make_selector(_cfg(method, **overrides)).select(train, K, seed)


def _per_class(result: SelectionResult, train: TrainSet, c: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions of class c's selected images within train.class_indices(c), and their weights."""
    in_class = train.y.numpy()[result.indices] == c
    positions = np.searchsorted(train.class_indices(c), result.indices[in_class])
    return positions, None if result.weights is None else result.weights[in_class]


def _proxy(train: TrainSet, method: str) -> Proxy:
    # The selectors' own proxy: same config and seed, so the same model (training is deterministic).
    return train_proxy(_cfg(method), train, SEED, "cpu")


def _class_gradients(proxy: Proxy, train: TrainSet, c: int) -> torch.Tensor:
    index = torch.as_tensor(train.class_indices(c))
    return last_layer_gradients(proxy.model, train.x[index], train.y[index])


@pytest.mark.parametrize("method", SELECTORS)
def test_k_per_class_unique_sorted_and_seeded(method, digits_train, one_thread) -> None:
    first, again, other = (_select(method, digits_train, seed) for seed in (SEED, SEED, SEED + 1))
    indices = first.indices
    assert indices.dtype == np.int64 and np.all(np.diff(indices) > 0)  # sorted, hence unique
    assert 0 <= indices[0] and indices[-1] < len(digits_train.y)
    assert np.bincount(digits_train.y.numpy()[indices], minlength=10).tolist() == [K] * 10
    np.testing.assert_array_equal(indices, again.indices)
    # Every method here depends on the seed: rand and kcenter directly, the others through the proxy's training.
    assert not np.array_equal(indices, other.indices)
    assert first.images is None and all(np.isscalar(v) for v in first.info.values())
    if method in WEIGHTED:
        assert first.weights.shape == indices.shape and np.all(first.weights > 0) and np.all(np.isfinite(first.weights))
        np.testing.assert_array_equal(first.weights, again.weights)
    else:
        assert first.weights is None
    if method not in ("rand", "kcenter"):
        assert 0.0 <= first.info["proxy_train_acc"] <= 1.0


@pytest.mark.parametrize("method", SELECTORS)
def test_k_larger_than_a_class_is_a_config_error(method, digits_train) -> None:
    smallest = int(np.bincount(digits_train.y.numpy()).min())
    with pytest.raises(ConfigError, match=f"k={smallest + 1} is larger than class"):
        make_selector(_cfg(method)).select(digits_train, smallest + 1, SEED)


def test_full_is_the_whole_training_set(digits_train) -> None:
    result = make_selector(_cfg("full")).select(digits_train, 10_000, SEED)
    np.testing.assert_array_equal(result.indices, np.arange(len(digits_train.y)))
    assert result.indices.dtype == np.int64 and result.weights is None


def _covering_radius(train: TrainSet, c: int, positions: np.ndarray) -> float:
    pixels = train.x[torch.as_tensor(train.class_indices(c))].flatten(1).double()
    return float(torch.cdist(pixels, pixels[torch.as_tensor(positions)]).min(1).values.max())


def test_kcenter_radius_is_its_covering_radius_and_beats_random(digits_train, one_thread) -> None:
    kcenter = _select("kcenter", digits_train)
    radii = [_covering_radius(digits_train, c, _per_class(kcenter, digits_train, c)[0]) for c in range(10)]
    assert kcenter.info["kcenter_radius"] == pytest.approx(max(radii), rel=1e-5)
    assert kcenter.info["kcenter_radius_mean"] == pytest.approx(np.mean(radii), rel=1e-5)
    for seed in RANDOM_SEEDS:
        rand = _select("rand", digits_train, seed)
        random_radii = [_covering_radius(digits_train, c, _per_class(rand, digits_train, c)[0]) for c in range(10)]
        # Farthest-first is a 2-approximation, so a lucky random draw can beat it in one class at k=5 (it does in
        # 1 of 5 class/seed pairs here); over the classes it must not.
        assert max(radii) <= max(random_radii) and np.mean(radii) <= np.mean(random_radii), (radii, random_radii)


def _naive_greedy(objective, n: int, k: int) -> list[int]:
    picks: list[int] = []
    for _ in range(k):
        candidates = [j for j in range(n) if j not in picks]
        picks.append(max(candidates, key=lambda j: objective(np.array(picks + [j]))))
    return picks


def _random_similarity(n: int = 24, seed: int = 3) -> torch.Tensor:
    points = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return cosine_similarity(points)


def test_vectorised_greedy_steps_match_a_naive_greedy(one_thread) -> None:
    sim = _random_similarity()
    assert greedy_facility_location(sim, 6).tolist() == _naive_greedy(
        lambda s: facility_location_objective(sim, s), len(sim), 6)
    for lam in (0.5, 2.0):
        assert greedy_graph_cut(sim, 6, lam).tolist() == _naive_greedy(
            lambda s: graph_cut_objective(sim, s, lam), len(sim), 6)
    points = torch.randn(30, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    herded = _naive_greedy(lambda s: -float(torch.linalg.vector_norm(points[s].mean(0) - points.mean(0))), 30, 7)
    assert herd(points, 7).tolist() == herded


def test_herding_mean_is_closer_to_the_class_mean_than_random(digits_train, one_thread) -> None:
    herding = _select("herding", digits_train)
    proxy = _proxy(digits_train, "herding")

    def mean_gap(result: SelectionResult) -> float:
        gaps = []
        for c in range(10):
            features = embeddings(proxy.model, digits_train.x[torch.as_tensor(digits_train.class_indices(c))])
            selected = features[torch.as_tensor(_per_class(result, digits_train, c)[0])]
            gaps.append(float(torch.linalg.vector_norm(selected.mean(0) - features.mean(0))))
        return float(np.mean(gaps))

    random_gap = np.mean([mean_gap(_select("rand", digits_train, seed)) for seed in RANDOM_SEEDS])
    assert mean_gap(herding) < 0.5 * random_gap


def test_craig_weights_count_the_class_and_its_objective_beats_random(digits_train, one_thread) -> None:
    craig = _select("craig", digits_train)
    proxy = _proxy(digits_train, "craig")
    randoms = [_select("rand", digits_train, seed) for seed in RANDOM_SEEDS]
    for c in range(10):
        positions, weights = _per_class(craig, digits_train, c)
        assert weights.sum() == len(digits_train.class_indices(c)) and np.all(weights == np.round(weights))
        sim = craig_similarity(_class_gradients(proxy, digits_train, c))
        # A weight is the number of class points whose most similar selected element it is.
        nearest = sim[:, torch.as_tensor(positions)].argmax(1)
        np.testing.assert_array_equal(weights, np.bincount(nearest.numpy(), minlength=K))
        objective = facility_location_objective(sim, positions)
        for rand in randoms:
            assert objective >= facility_location_objective(sim, _per_class(rand, digits_train, c)[0])


def test_gradmatch_residual_is_smaller_than_random_with_best_weights(digits_train, one_thread) -> None:
    gradmatch = _select("gradmatch", digits_train)
    proxy = _proxy(digits_train, "gradmatch")
    randoms = [_select("rand", digits_train, seed) for seed in RANDOM_SEEDS]
    residuals, random_residuals = [], []
    for c in range(10):
        features = _class_gradients(proxy, digits_train, c)
        positions, weights = _per_class(gradmatch, digits_train, c)
        residuals.append(relative_residual(features, positions, weights))
        for rand in randoms:
            random_positions = _per_class(rand, digits_train, c)[0]
            random_residuals.append(relative_residual(features, random_positions,
                                                      best_weights(features, random_positions)))
    assert gradmatch.info["gradmatch_rel_residual"] == pytest.approx(np.mean(residuals), rel=1e-6)
    assert np.mean(residuals) < 0.8 * np.mean(random_residuals)


def test_gradmatch_recovers_an_exact_nonnegative_combination(one_thread) -> None:
    # Three distinct gradients repeated 7, 3 and 5 times: the class sum is exactly 7 a + 3 b + 5 c.
    base = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    features = base.repeat_interleave(torch.tensor([7, 3, 5]), dim=0)
    picks, weights, filled = omp_nonnegative(features, 3)
    groups = np.searchsorted([7, 10, 15], picks, side="right")
    assert filled == 0 and sorted(groups.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(weights[np.argsort(groups)], [7, 3, 5], rtol=1e-3)
    assert relative_residual(features, picks, weights) < 1e-3
    # More slots than independent directions: still k rows with positive weights.
    picks, weights, _ = omp_nonnegative(features, 6)
    assert len(np.unique(picks)) == 6 and np.all(weights > 0)


def test_gradmatch_fills_slots_no_row_can_improve_with_a_small_positive_weight(one_thread) -> None:
    # Rows a, a, -a: the sum is a; once both copies of a share it, -a only points away from the residual.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    picks, weights, filled = omp_nonnegative(features, 3)
    assert filled == 1 and picks[-1] == 2 and sorted(picks.tolist()) == [0, 1, 2]
    assert np.all(weights > 0) and weights[-1] == pytest.approx(1e-3)
    assert relative_residual(features, picks, weights) < 1e-2


@pytest.mark.parametrize("function", ("graph_cut", "facility_location"))
def test_submod_objective_beats_random(function, digits_train, one_thread) -> None:
    cfg = {"submod_function": function}
    submod = _select("submod", digits_train, **cfg)
    proxy = _proxy(digits_train, "submod")
    lam = _cfg("submod").graph_cut_lambda
    randoms = [_select("rand", digits_train, seed) for seed in RANDOM_SEEDS]
    for c in range(10):
        sim = cosine_similarity(_class_gradients(proxy, digits_train, c))

        def objective(positions: np.ndarray) -> float:
            if function == "graph_cut":
                return graph_cut_objective(sim, positions, lam)
            return facility_location_objective(sim, positions)

        value = objective(_per_class(submod, digits_train, c)[0])
        assert all(value >= objective(_per_class(rand, digits_train, c)[0]) for rand in randoms)
