"""Distances, k-center and the MFC searches (fixed k, fixed eta) against brute force and HiGHS."""

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
    min_cover,
    min_radius_cover,
    pad_farthest,
    pairwise_distances,
    verify_certificate,
)
from sustainml_exp.families.mfc_coreset.selection.highs import solve_highs
from sustainml_exp.families.mfc_coreset.selection.setcover import greedy_set_cover


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
            assert found.status == "optimal" and found.gap == 0 and found.undecided == 0 and found.k <= k
            assert found.eta == _brute_kcenter_radius(dist, k) == found.eta_lower
            assert verify_certificate(dist, found.centres, found.eta)
            assert sum(found.decided_by.values()) == found.steps
            # One distance below eta the exact solver needs more than k centres.
            smaller = dist[dist < found.eta].max()
            below = min_cover(dist, float(smaller))
            assert below.status == "optimal" and below.k > k


def test_eta_bounds_bracket_the_brute_force_radius_whatever_stops_the_search(one_thread) -> None:
    gen = torch.Generator().manual_seed(3)
    for trial in range(6):
        n = 12
        dist = pairwise_distances(torch.rand(n, 4, generator=gen))
        for k in (2, 3, 4):
            optimum = _brute_kcenter_radius(dist, k)
            for solver, steps in (("greedy", 100), ("exact", 1), ("exact", 2), ("exact", 100)):
                found = min_radius_cover(dist, k, first=trial % n, solver=solver, max_steps=steps)
                assert found.eta_lower <= optimum <= found.eta, (trial, k, solver, steps)
                assert found.gap == pytest.approx((found.eta - found.eta_lower) / found.eta)
                assert (found.status == "optimal") == (found.gap == 0) or solver == "greedy"
                assert found.k <= k and verify_certificate(dist, found.centres, found.eta)
                assert found.trace[-1][1:] == (found.eta, found.eta_lower)
                # The bracket only ever narrows.
                uppers, lowers = [t[1] for t in found.trace], [t[2] for t in found.trace]
                assert uppers == sorted(uppers, reverse=True) and lowers == sorted(lowers)


def test_milp_optimum_equals_brute_force_and_sits_between_the_bounds(one_thread) -> None:
    for dist in _tiny_instances(4, n=11):
        for quantile in (0.15, 0.3, 0.5):
            eta = float(torch.quantile(dist.flatten(), quantile))
            exact = min_cover(dist, eta)
            assert exact.status == "optimal" and exact.gap == 0
            assert exact.k == _brute_min_cover(dist, eta) == exact.lower_bound
            assert exact.lower_bound <= exact.k <= exact.k_greedy
            assert verify_certificate(dist, exact.centres, eta)


def test_fixed_eta_on_digits_matches_the_milp_and_its_bounds_sandwich_it(digits_train, one_thread) -> None:
    dist = _digits_class(digits_train, 3)
    for eta in (1.2, 1.6, 2.0):
        covers = dist <= eta
        greedy = greedy_set_cover(covers)
        sparse = coverage_matrix(dist, eta, block=50)
        assert sparse.nnz == int(covers.sum())
        lp = solve_highs(sparse, integer=False, time_limit_s=30)
        milp = solve_highs(sparse, integer=True, time_limit_s=30, start=greedy)
        assert lp.solved and milp.solved and len(milp.centres) <= len(greedy)
        assert verify_certificate(dist, greedy, eta) and verify_certificate(dist, milp.centres, eta)
        exact = min_cover(dist, eta)
        assert exact.status == "optimal" and exact.k == len(milp.centres)
        # Lagrangian <= LP <= MILP (weak duality), and its ceiling is a lower bound the search may use.
        assert exact.lagrangian_bound <= lp.objective + 1e-6 and exact.lower_bound == exact.k


def test_a_time_limit_keeps_a_valid_cover_and_a_certified_gap(one_thread) -> None:
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
    assert result.status == "feasible" and result.time_limited and 0 < result.gap < 1
    assert result.lower_bound < result.k <= len(greedy) and verify_certificate(dist, result.centres, eta)
    assert result.multiplicities.sum() == 200
    limited = min_radius_cover(dist, 15, time_limit_s=1e-6)
    assert limited.status == "feasible" and limited.time_limited and limited.steps == 0 and limited.k <= 15
    # Nothing decided: the bracket is farthest-first's, [the smallest distance >= r_g / 2, r_g].
    radius = limited.kcenter_radius
    assert limited.eta == radius and limited.eta_lower == float(dist[dist >= radius / 2].min())
    assert limited.gap == pytest.approx((radius - limited.eta_lower) / radius) and limited.gap <= 0.5
    assert verify_certificate(dist, limited.centres, limited.eta)
    enough = min_radius_cover(dist, 15, time_limit_s=60, target_gap=0.2)
    assert enough.gap <= 0.2 and not enough.time_limited and enough.eta <= limited.eta


def test_bad_arguments_say_what_is_allowed() -> None:
    dist = _tiny_instances(1)[0]
    for kwargs, message in (({"solver": "lp"}, "solver='lp'; allowed: exact, greedy"),
                            ({"time_limit_s": 0}, "time_limit_s=0; allowed: time_limit_s > 0"),
                            ({"target_gap": 1.0}, "target_gap=1.0; allowed: 0 <= target_gap < 1"),
                            ({"max_steps": 0}, "max_steps=0; allowed: max_steps >= 1")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            min_radius_cover(dist, 2, **kwargs)


def test_mfc_never_needs_more_centres_than_greedy_and_multiplicities_count_the_class(digits_train,
                                                                                     one_thread) -> None:
    for c in (0, 8):
        dist = _digits_class(digits_train, c)
        exact = min_radius_cover(dist, 6, first=0)
        greedy = min_radius_cover(dist, 6, first=0, solver="greedy")
        assert exact.status == "optimal" and greedy.status == "greedy"
        assert exact.k <= exact.k_greedy and exact.k <= 6
        assert exact.eta <= greedy.eta <= exact.kcenter_radius and greedy.eta_lower <= exact.eta
        assert exact.eta_lower == exact.eta and exact.kcenter_radius / 2 <= exact.eta
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
