"""Covering algorithms against brute force on tiny point sets, and their bounds on a digits class."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sustainml_exp.families.mfc_coreset.selection.covering import (
    assign_to_centres,
    coverage_matrix,
    greedy_kcenter,
    greedy_set_cover,
    min_cover,
    min_radius_cover,
    packing_lower_bound,
    pad_farthest,
    pairwise_distances,
    solve_highs,
    verify_certificate,
)


def _tiny_instances(count: int, n: int = 9, dim: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [pairwise_distances(torch.rand(n, dim, generator=gen)) for _ in range(count)]


def _brute_kcenter_radius(dist: torch.Tensor, k: int) -> float:
    return min(float(dist[:, list(c)].min(1).values.max()) for c in itertools.combinations(range(len(dist)), k))


def _brute_min_cover(dist: torch.Tensor, eta: float) -> int:
    within = (dist <= eta).numpy()
    n = len(within)
    return next(size for size in range(1, n + 1)
                if any(within[:, list(c)].any(1).all() for c in itertools.combinations(range(n), size)))


def _digits_class(train, c: int) -> torch.Tensor:
    return pairwise_distances(train.x[torch.as_tensor(train.class_indices(c))])


def test_pairwise_distances_match_a_naive_loop(one_thread) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(7, 2, 3, 3, generator=gen)
    # Near-duplicates: the float32 expansion ||a||^2 + ||b||^2 - 2ab would lose these distances to cancellation.
    x[1] = x[0] + 1e-4
    y = torch.rand(5, 18, generator=gen)
    flat_x, flat_y = x.reshape(7, -1).double(), y.double()
    expected_xy = torch.tensor([[float(torch.linalg.vector_norm(a - b)) for b in flat_y] for a in flat_x],
                               dtype=torch.float64)
    expected_xx = torch.tensor([[float(torch.linalg.vector_norm(a - b)) for b in flat_x] for a in flat_x],
                               dtype=torch.float64)
    for block in (1, 3, 4096):
        xy = pairwise_distances(x, y, block=block)
        xx = pairwise_distances(x, block=block)
        assert xy.dtype == torch.float32 and xy.shape == (7, 5) and xx.shape == (7, 7)
        torch.testing.assert_close(xy.double(), expected_xy, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(xx.double(), expected_xx, rtol=1e-6, atol=1e-7)
        assert torch.equal(xx, xx.T) and torch.all(xx.diagonal() == 0) and torch.all(xx >= 0)
    assert float(pairwise_distances(x)[0, 1]) == pytest.approx(1e-4 * math.sqrt(18), rel=1e-4)


def test_greedy_kcenter_radius_brackets_the_brute_force_optimum(one_thread) -> None:
    for dist in _tiny_instances(6):
        for k in (1, 2, 3, 4):
            centres, radius = greedy_kcenter(dist, k, first=2)
            assert centres[0] == 2 and len(set(centres.tolist())) == k
            assert radius == pytest.approx(float(dist[:, centres].min(1).values.max()))
            optimum = _brute_kcenter_radius(dist, k)
            assert radius / 2 <= optimum + 1e-7 and optimum <= radius + 1e-7


def test_min_radius_cover_finds_the_smallest_eta(one_thread) -> None:
    for dist in _tiny_instances(6):
        for k in (2, 3):
            found = min_radius_cover(dist, k, first=0)
            assert found.status == "optimal" and found.undecided == 0 and found.k <= k
            assert found.eta == pytest.approx(_brute_kcenter_radius(dist, k), abs=0.0)
            assert verify_certificate(dist, found.centres, found.eta)
            # One distance below eta the exact solver needs more than k centres.
            smaller = dist[dist < found.eta].max()
            below = min_cover(dist, float(smaller))
            assert below.status == "optimal" and below.k > k


def test_milp_optimum_equals_brute_force_and_sits_between_the_bounds(one_thread) -> None:
    for dist in _tiny_instances(4, n=11):
        for quantile in (0.15, 0.3, 0.5):
            eta = float(torch.quantile(dist.flatten(), quantile))
            exact = min_cover(dist, eta)
            assert exact.status == "optimal" and exact.gap == 0
            assert exact.k == _brute_min_cover(dist, eta)
            assert exact.lower_bound <= exact.k <= exact.k_greedy
            assert verify_certificate(dist, exact.centres, eta)


def test_lp_lower_bound_exact_and_greedy_sandwich_on_digits(digits_train, one_thread) -> None:
    dist = _digits_class(digits_train, 3)
    for eta in (1.2, 1.6, 2.0):
        covers = dist <= eta
        greedy = greedy_set_cover(covers)
        sparse = coverage_matrix(dist, eta, block=50)
        assert sparse.nnz == int(covers.sum())
        lp = solve_highs(sparse, integer=False, time_limit_s=30)
        milp = solve_highs(sparse, integer=True, time_limit_s=30, start=greedy)
        assert lp.solved and milp.solved
        packing = packing_lower_bound(covers)
        assert packing <= lp.objective + 1e-6 <= len(milp.centres) + 1e-6 and len(milp.centres) <= len(greedy)
        assert verify_certificate(dist, greedy, eta) and verify_certificate(dist, milp.centres, eta)
        exact = min_cover(dist, eta)
        assert exact.k == len(milp.centres) and exact.lp_bound == pytest.approx(lp.objective)


def test_a_timed_out_milp_keeps_its_best_cover_and_gap(one_thread) -> None:
    gen = torch.Generator().manual_seed(1)
    dist = pairwise_distances(torch.rand(200, 20, generator=gen))
    eta = float(torch.quantile(dist.flatten(), 0.1))
    greedy = greedy_set_cover(dist <= eta)
    sparse = coverage_matrix(dist, eta)
    timed_out = solve_highs(sparse, integer=True, time_limit_s=1e-6, start=greedy)
    assert timed_out.model_status == "kTimeLimit" and not timed_out.solved
    assert timed_out.centres is not None and len(timed_out.centres) <= len(greedy)
    assert verify_certificate(dist, timed_out.centres, eta)
    assert timed_out.dual_bound <= len(timed_out.centres)
    nothing = solve_highs(sparse, integer=True, time_limit_s=1e-6)
    assert nothing.model_status == "kTimeLimit" and nothing.centres is None
    result = min_cover(dist, eta, time_limit_s=1e-6)
    assert result.status == "time_limit" and 0 < result.gap < 1 and math.isnan(result.lp_bound)
    assert result.lower_bound < result.k <= len(greedy) and verify_certificate(dist, result.centres, eta)
    assert result.multiplicities.sum() == 200
    limited = min_radius_cover(dist, 15, time_limit_s=1e-6)
    assert limited.status == "time_limit" and limited.undecided > 0 and limited.k <= 15
    assert verify_certificate(dist, limited.centres, limited.eta) and limited.eta_lower <= limited.eta


def test_mfc_never_needs_more_centres_than_greedy_and_multiplicities_count_the_class(digits_train,
                                                                                     one_thread) -> None:
    for c in (0, 8):
        dist = _digits_class(digits_train, c)
        exact = min_radius_cover(dist, 6, first=0)
        greedy = min_radius_cover(dist, 6, first=0, solver="greedy")
        assert exact.status == "optimal" and greedy.status == "greedy"
        assert exact.k <= exact.k_greedy and exact.k <= 6
        assert exact.eta <= greedy.eta <= exact.kcenter_radius
        assert exact.eta_lower <= exact.eta and exact.kcenter_radius / 2 <= exact.eta
        assert exact.multiplicities.sum() == len(dist) and np.all(exact.multiplicities >= 1)
        assignment, multiplicities, certificate = assign_to_centres(dist, exact.centres)
        assert np.array_equal(multiplicities, exact.multiplicities) and certificate == exact.certificate
        assert np.array_equal(np.bincount(exact.assignment, minlength=exact.k), exact.multiplicities)


def test_certificate_and_padding(digits_train, one_thread) -> None:
    members = torch.as_tensor(digits_train.class_indices(5))
    points = digits_train.x[members]
    dist = pairwise_distances(points)
    found = min_radius_cover(dist, 4, first=1, time_limit_s=30)
    assert verify_certificate(dist, found.centres, found.eta)
    assert verify_certificate(points, found.centres, found.eta, points=True)
    assert not verify_certificate(dist, found.centres, found.certificate * 0.999)
    padded = pad_farthest(dist, found.centres, 9)
    assert len(padded) == 9 and set(found.centres.tolist()) <= set(padded.tolist())
    assert np.all(np.diff(padded) > 0) and verify_certificate(dist, padded, found.eta)
    with pytest.raises(ValueError, match="allowed"):
        pad_farthest(dist, found.centres, len(found.centres) - 1)
