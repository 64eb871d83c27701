"""Variance minimisation (VM) of INT2 stochastic rounding under i-Exact's clipped-normal activation model.

Model: a block of d values normalised to [0, B] (B = 3 for INT2) puts its minimum at 0 and its maximum at B;
every other value follows N(mu = B/2, sigma) clipped to [0, B], with sigma chosen so that the clipped mass
at each end equals 1/d (the block's extreme values): Phi((0 - mu) / sigma) = 1/d, i.e.
sigma = -mu / Phi^-1(1/d). The end atoms sit exactly on quantization levels, so they add no rounding variance.

Stochastic rounding of x in a bin [l, u] has variance (x - l)(u - x). With levels {0, a, B - a, B} the
expected variance over the model is minimised by a(d); a = 1 gives the uniform INT2 grid.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

__all__ = [
    "clipped_normal_sigma",
    "closed_form_inner_level",
    "cn_bin_probs",
    "cn_density",
    "expected_sr_variance",
    "optimal_inner_level",
    "variance_reduction",
]

_INNER_LEVEL_BOUNDS = (1e-9, 1.5)


def _check_d(d: float) -> None:
    if not d > 2:
        raise ValueError(f"the clipped-normal model needs a block size d > 2, got {d}")


def clipped_normal_sigma(d: float, B: float = 3.0) -> float:
    """sigma of the model: the normal N(B/2, sigma) puts mass 1/d below 0 (and above B)."""
    _check_d(d)
    mu = B / 2.0
    return float(-mu / stats.norm.ppf(1.0 / d))


def cn_density(x: np.ndarray | float, d: float, B: float = 3.0) -> tuple[np.ndarray, float]:
    """(continuous density at ``x``, mass of each end atom): the pdf of N(B/2, sigma) on [0, B] (0 outside),
    which integrates to 1 - 2/d, plus point masses 1/d at 0 and at B."""
    sigma = clipped_normal_sigma(d, B)
    x = np.asarray(x, dtype=np.float64)
    density = np.where((x >= 0.0) & (x <= B), stats.norm.pdf(x, loc=B / 2.0, scale=sigma), 0.0)
    return density, 1.0 / d


def cn_bin_probs(edges: np.ndarray, d: float, B: float = 3.0) -> np.ndarray:
    """Model probability of each histogram bin [edges[i], edges[i+1]) over [0, B]; the atoms at 0 and B fall
    into the first and last bin (edges must start at 0 and end at B). Sums to 1."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0.0 or edges[-1] != B or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must increase strictly from 0 to B={B}")
    sigma = clipped_normal_sigma(d, B)
    probs = np.diff(stats.norm.cdf(edges, loc=B / 2.0, scale=sigma))
    probs[0] += 1.0 / d
    probs[-1] += 1.0 / d
    return probs


def _bin_sr_variance(lo: float, hi: float, mu: float, sigma: float) -> float:
    """Integral over [lo, hi] of pdf_N(mu, sigma)(x) * (x - lo)(hi - x), from the normal's partial moments."""
    alpha, beta = (lo - mu) / sigma, (hi - mu) / sigma
    pdf_a, pdf_b = stats.norm.pdf(alpha), stats.norm.pdf(beta)
    m0 = stats.norm.cdf(beta) - stats.norm.cdf(alpha)  # integral of phi(z)
    m1 = pdf_a - pdf_b  # integral of z phi(z)
    m2 = m0 + alpha * pdf_a - beta * pdf_b  # integral of z^2 phi(z)
    mass = m0
    first = mu * m0 + sigma * m1
    second = mu * mu * m0 + 2.0 * mu * sigma * m1 + sigma * sigma * m2
    return float(-second + (lo + hi) * first - lo * hi * mass)


def expected_sr_variance(a: float, d: float, B: float = 3.0) -> float:
    """E[(x - l)(u - x)] over the clipped-normal model with levels {0, a, B - a, B} (normalised units)."""
    if not 0.0 < a < B / 2.0:
        raise ValueError(f"inner level a must lie in (0, {B / 2.0}), got {a}")
    mu, sigma = B / 2.0, clipped_normal_sigma(d, B)
    levels = (0.0, a, B - a, B)
    return sum(_bin_sr_variance(lo, hi, mu, sigma) for lo, hi in zip(levels[:-1], levels[1:]))


@lru_cache(maxsize=None)
def optimal_inner_level(d: int) -> float:
    """The inner level a in (0, 1.5) minimising ``expected_sr_variance`` for blocks of d values (B = 3).

    Blocks of at most 2 values consist of their minimum and maximum, which the outer levels code exactly, so
    the inner levels are never used there and the uniform a = 1 is returned."""
    if d <= 2:
        return 1.0
    result = optimize.minimize_scalar(lambda a: expected_sr_variance(a, d), bounds=_INNER_LEVEL_BOUNDS,
                                      method="bounded", options={"xatol": 1e-10})
    if not result.success:
        raise RuntimeError(f"optimal_inner_level({d}) did not converge: {result.message}")
    return float(result.x)


def closed_form_inner_level(d: float) -> float:
    """The published fit of a(d) (i-Exact); a cross-check of ``optimal_inner_level``, not used for training."""
    return 0.83162565 + 0.02993653 * math.log(116.05528511 * d) + 1.225e-5 * d - 0.00171617 * math.sqrt(d)


def variance_reduction(d: int) -> float:
    """Fraction of the expected INT2 rounding variance removed by the optimal levels: 1 - var(a*) / var(1)."""
    return 1.0 - expected_sr_variance(optimal_inner_level(d), d) / expected_sr_variance(1.0, d)
