"""Set cover at one radius: lower bounds never above the optimum, primal covers always covers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sustainml_exp.families.mfc_coreset.selection.covering import coverage_matrix, pairwise_distances
from sustainml_exp.families.mfc_coreset.selection.highs import solve_highs
from sustainml_exp.families.mfc_coreset.selection.setcover import (
    ceil_bound,
    greedy_set_cover,
    is_cover,
    lagrangian_bound,
    lagrangian_greedy,
    lagrangian_value,
    packing,
    remove_redundant,
    swap_search,
)


def _instances(count: int, n: int, seed: int, quantiles=(0.1, 0.25, 0.45)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(dist, covers) pairs from random points, at radii from sparse to dense."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        dist = pairwise_distances(torch.rand(n, 3, generator=gen))
        for q in quantiles:
            out.append((dist, dist <= float(torch.quantile(dist.flatten(), q))))
    return out


def _brute_min_cover(covers: torch.Tensor) -> int:
    within = covers.numpy()
    n = within.shape[1]
    return next(size for size in range(1, n + 1)
                if any(within[:, list(c)].any(1).all() for c in itertools.combinations(range(n), size)))


def _indicator(n: int, points: np.ndarray) -> np.ndarray:
    u = np.zeros(n)
    u[points] = 1.0
    return u


def _lagrangian_from_packing(covers: torch.Tensor, **kwargs):
    packed = packing(covers, symmetric=True)
    greedy = greedy_set_cover(covers, symmetric=True)
    return packed, greedy, lagrangian_bound(covers, _indicator(len(covers), packed), target=len(greedy), **kwargs)


def test_lower_bounds_never_exceed_the_brute_force_optimum_and_reach_it_where_it_is_known(one_thread) -> None:
    reached = 0
    for _, covers in _instances(8, 10, seed=0):
        optimum = _brute_min_cover(covers)
        packed, greedy, lagrangian = _lagrangian_from_packing(covers)
        assert len(packed) <= lagrangian.bound + 1e-9 and ceil_bound(lagrangian.bound) <= optimum <= len(greedy)
        # The reported multipliers give the reported bound when anyone evaluates L(u) again.
        assert lagrangian_value(covers, lagrangian.multipliers) == pytest.approx(lagrangian.bound, abs=1e-12)
        # Random multipliers give a valid bound too (any u >= 0 does).
        u = np.random.default_rng(len(packed)).exponential(0.3, size=len(covers))
        assert lagrangian_value(covers, u) <= optimum + 1e-9
        reached += ceil_bound(lagrangian.bound) == optimum
    # Where the optimum equals a packing (the usual case on these instances) the bound proves it.
    assert reached >= 12


def test_lagrangian_bound_lies_between_the_packing_and_the_lp_on_digits(digits_train, one_thread) -> None:
    members = torch.as_tensor(digits_train.class_indices(7))
    dist = pairwise_distances(digits_train.x[members])
    stronger, ratios = 0, []
    for eta in (1.0, 1.3, 1.6, 2.0, 2.4):
        covers = dist <= eta
        packed, greedy, lagrangian = _lagrangian_from_packing(covers, max_iterations=2000)
        lp = solve_highs(coverage_matrix(dist, eta), integer=False, time_limit_s=30)
        milp = solve_highs(coverage_matrix(dist, eta), integer=True, time_limit_s=30, start=greedy)
        assert lp.solved and milp.solved
        assert len(packed) <= lagrangian.bound <= lp.objective + 1e-7 <= len(milp.centres) + 1e-7
        ratios.append(lagrangian.bound / lp.objective)
        stronger += lagrangian.bound > len(packed) + 1e-6
    # Subgradient ascent gets close to the LP optimum it is bounded by, and above the packing it starts from.
    assert min(ratios) >= 0.9 and np.mean(ratios) >= 0.97 and stronger >= 2


def test_lagrangian_bound_on_a_row_subset_is_still_a_bound(one_thread) -> None:
    for _, covers in _instances(4, 10, seed=5):
        optimum = _brute_min_cover(covers)
        rows = np.arange(0, len(covers), 2)
        packed = packing(covers, symmetric=True)
        result = lagrangian_bound(covers, _indicator(len(covers), packed), target=optimum + 1, rows=rows)
        assert np.all(result.multipliers[np.setdiff1d(np.arange(len(covers)), np.union1d(rows, packed))] == 0)
        assert ceil_bound(result.bound) <= optimum


def test_stop_above_ends_the_ascent_once_the_bound_refutes_a_size(one_thread) -> None:
    for _, covers in _instances(3, 30, seed=2, quantiles=(0.1,)):
        packed = packing(covers, symmetric=True)
        full = lagrangian_bound(covers, _indicator(len(covers), packed), target=len(covers))
        early = lagrangian_bound(covers, _indicator(len(covers), packed), target=len(covers),
                                 stop_above=len(packed) - 0.5)
        assert early.iterations == 1 and early.bound == len(packed) <= full.bound


def test_primal_covers_always_cover_and_local_search_never_breaks_coverage(one_thread) -> None:
    found = 0
    for dist, covers in _instances(3, 40, seed=1):
        n = len(covers)
        greedy = greedy_set_cover(covers, symmetric=True)
        packed, _, lagrangian = _lagrangian_from_packing(covers)
        guided = lagrangian_greedy(covers, lagrangian.multipliers, symmetric=True)
        assert is_cover(covers, greedy) and is_cover(covers, guided)
        # Not symmetric: the same answers from strided columns.
        assert np.array_equal(greedy_set_cover(covers), greedy) and is_cover(covers, lagrangian_greedy(
            covers, lagrangian.multipliers))
        # Redundancy removal keeps a cover from any start, even all points.
        trimmed = remove_redundant(covers, np.arange(n), symmetric=True)
        assert is_cover(covers, trimmed) and len(trimmed) < n
        for size in sorted({len(packed), (len(packed) + len(greedy)) // 2, len(greedy) - 1}):
            for start in (greedy, guided, np.arange(n)[::7], np.zeros(0, dtype=np.int64)):
                result = swap_search(covers, start, size, max_moves=200, seed=size, symmetric=True)
                if result is not None:
                    found += 1
                    assert len(result) <= size and is_cover(covers, result), (size, len(start))
                    assert verify_radius(dist, result, covers)
        assert swap_search(covers, greedy, len(packed) - 1, max_moves=100, symmetric=True) is None
    assert found > 0


def verify_radius(dist: torch.Tensor, centres: np.ndarray, covers: torch.Tensor) -> bool:
    """Recomputed from the distances: every point within the instance's radius of a returned centre."""
    eta = float(dist[covers].max())
    return bool((dist[:, torch.as_tensor(centres)].min(1).values <= eta).all())


def test_local_search_reaches_the_optimum_that_greedy_misses(one_thread) -> None:
    better = 0
    for _, covers in _instances(10, 12, seed=4):
        optimum = _brute_min_cover(covers)
        greedy = greedy_set_cover(covers, symmetric=True)
        result = swap_search(covers, greedy, optimum, max_moves=2000, seed=0, symmetric=True)
        assert result is not None and len(result) == optimum and is_cover(covers, result)
        better += len(greedy) > optimum
    assert better >= 1  # greedy alone is not optimal on some of these
