"""Variance minimisation: the clipped-normal model, the optimal inner level and the published figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from sustainml_exp.compress import (
    clipped_normal_sigma,
    closed_form_inner_level,
    cn_bin_probs,
    cn_density,
    dequantize,
    expected_sr_variance,
    optimal_inner_level,
    quantize,
    variance_reduction,
)

PAPER_D = [16, 32, 64, 100, 128, 256, 512, 1000, 1024]
# i-Exact's variance reduction of VM over uniform INT2, percent.
PAPER_REDUCTION_PCT = {16: 1.8, 64: 6.3, 256: 12.7, 1024: 19.7}


def test_sigma_puts_mass_one_over_d_beyond_each_end() -> None:
    for d in (16, 1024):
        sigma = clipped_normal_sigma(d)
        assert stats.norm.cdf(0.0, loc=1.5, scale=sigma) == pytest.approx(1 / d, rel=1e-12)
        assert stats.norm.sf(3.0, loc=1.5, scale=sigma) == pytest.approx(1 / d, rel=1e-12)
    with pytest.raises(ValueError, match="d > 2"):
        clipped_normal_sigma(2)


def test_density_and_atoms_sum_to_one() -> None:
    d = 64
    continuous = integrate.quad(lambda x: float(cn_density(x, d)[0]), 0.0, 3.0)[0]
    atom = cn_density(0.0, d)[1]
    assert continuous + 2 * atom == pytest.approx(1.0, abs=1e-9)
    assert float(cn_density(-0.1, d)[0]) == 0.0 and float(cn_density(3.1, d)[0]) == 0.0
    probs = cn_bin_probs(np.linspace(0.0, 3.0, 31), d)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12) and probs[0] > probs[1]


@pytest.mark.parametrize("a", [0.5, 1.0, 1.1])
def test_closed_form_variance_matches_numerical_integration(a: float) -> None:
    d = 100
    sigma = clipped_normal_sigma(d)
    levels = (0.0, a, 3 - a, 3.0)
    numeric = sum(integrate.quad(lambda x, lo=lo, hi=hi: stats.norm.pdf(x, 1.5, sigma) * (x - lo) * (hi - x),
                                 lo, hi, epsabs=1e-13)[0] for lo, hi in zip(levels[:-1], levels[1:]))
    assert expected_sr_variance(a, d) == pytest.approx(numeric, rel=1e-9)


def test_optimal_inner_level_matches_the_published_fit() -> None:
    deviations = {d: abs(optimal_inner_level(d) - closed_form_inner_level(d)) for d in PAPER_D}
    assert max(deviations.values()) < 1e-3, deviations
    for d in PAPER_D:
        a = optimal_inner_level(d)
        assert expected_sr_variance(a, d) <= min(expected_sr_variance(a + da, d) for da in (-1e-3, 1e-3))


@pytest.mark.parametrize("d", sorted(PAPER_REDUCTION_PCT))
def test_variance_reduction_matches_the_paper(d: int) -> None:
    assert 100 * variance_reduction(d) == pytest.approx(PAPER_REDUCTION_PCT[d], abs=0.3)


def test_tiny_blocks_fall_back_to_uniform_levels() -> None:
    assert optimal_inner_level(1) == optimal_inner_level(2) == 1.0


def test_vm_lowers_the_measured_rounding_error_on_gaussian_blocks() -> None:
    """On data that follows the model, VM INT2 has a lower mean squared rounding error than uniform INT2."""
    d, seeds = 256, 8
    x = torch.randn(32 * d, generator=torch.Generator().manual_seed(0))
    mse = {vm: sum(float((dequantize(quantize(x, 2, d, vm=vm, seed=s)) - x).pow(2).mean()) for s in range(seeds))
           for vm in (False, True)}
    reduction = 1 - mse[True] / mse[False]
    assert 0.05 < reduction < 0.25
