"""Table 5 statistics: how well do the uniform and the clipped-normal models describe normalized activations?

Every quantization group of d values is mapped onto [0, B] by its own min and max, so each group puts (at least)
one value exactly at 0 and one exactly at B. Both are coded exactly by the outer INT levels, and the clipped-normal
model of i-Exact represents them as point masses of 1/d at each end. The empirical distribution is therefore
compared to the models on a partition with two atoms ({0} and {B}) plus ``nbins`` equal bins of the open interval
(0, B); a continuous histogram would smear the atoms into the outer bins and hide exactly the effect the model
captures.

The Jensen-Shannon divergence is computed in nats with ``scipy.special.rel_entr`` on these discrete
distributions. JSD (rather than KL) is used because the uniform model gives zero mass to the atoms, which would
make KL(empirical || uniform) infinite; JSD stays finite and is bounded by ln 2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import special, stats

from sustainml_exp.compress.vm import clipped_normal_sigma, optimal_inner_level

__all__ = ["activation_stats", "jensen_shannon", "model_probs", "normalize_groups", "sr_variance"]

# The clipped-normal model needs d > 2: with d <= 2 every value of a group is its min or max.
_MIN_CN_GROUP = 3


def normalize_groups(x: torch.Tensor, group_size: int, bits: int = 2) -> torch.Tensor:
    """Flatten ``x``, cut it into consecutive groups of ``group_size`` values (the last may be shorter) and map
    each group onto [0, B], B = 2^bits - 1, by (x - min) / (max - min) * B. A constant group maps to 0.

    Division (not multiplication by a reciprocal scale) makes each group's min and max land exactly on 0 and B."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    flat = x.detach().reshape(-1)
    if not flat.is_floating_point():
        flat = flat.float()
    n = flat.numel()
    if n == 0:
        return flat.clone()
    n_groups = -(-n // group_size)
    pad = n_groups * group_size - n
    # Padding the short last group with its own first value leaves its min and max unchanged.
    if pad:
        tail_start = (n_groups - 1) * group_size
        flat_padded = torch.cat([flat, flat[tail_start].expand(pad)])
    else:
        flat_padded = flat
    groups = flat_padded.view(n_groups, group_size)
    lo = groups.amin(dim=1, keepdim=True)
    span = groups.amax(dim=1, keepdim=True) - lo
    levels = float(2**bits - 1)
    constant = span == 0
    h = torch.where(constant, torch.zeros_like(groups), (groups - lo) / torch.where(constant, 1.0, span) * levels)
    return h.clamp_(0.0, levels).reshape(-1)[:n]


def model_probs(model: str, edges: np.ndarray, d: int, B: float = 3.0) -> np.ndarray:
    """Probabilities of [atom at 0, interior bins between ``edges``..., atom at B] under ``model``:
    'uniform' (density 1/B on [0, B], no atoms) or 'cn' (N(B/2, sigma(d)) clipped to [0, B]: its tails become
    point masses 1/d at 0 and at B)."""
    edges = np.asarray(edges, dtype=np.float64)
    if model == "uniform":
        return np.concatenate([[0.0], np.diff(edges) / B, [0.0]])
    if model == "cn":
        sigma = clipped_normal_sigma(d, B)
        cdf = stats.norm.cdf(edges, loc=B / 2.0, scale=sigma)
        # Compute the atoms from the cdf too, so the vector sums to 1 to rounding error.
        return np.concatenate([[cdf[0]], np.diff(cdf), [1.0 - cdf[-1]]])
    raise ValueError(f"unknown model {model!r}; allowed: uniform, cn")


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats between two discrete distributions on the same cells."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)
    return float(0.5 * special.rel_entr(p, m).sum() + 0.5 * special.rel_entr(q, m).sum())


def sr_variance(h: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Stochastic-rounding variance (h - l)(u - h) of each value given the sorted quantization ``levels``."""
    grid = np.asarray(levels, dtype=np.float64)
    upper_idx = np.clip(np.searchsorted(grid, h, side="right"), 1, len(grid) - 1)
    lower, upper = grid[upper_idx - 1], grid[upper_idx]
    return np.clip((h - lower) * (upper - h), 0.0, None)


def activation_stats(h: torch.Tensor, d: int, B: int = 3, nbins: int = 30) -> dict[str, Any]:
    """Compare normalized values ``h`` in [0, B] (from ``normalize_groups`` with groups of ``d`` values) to the
    uniform and the clipped-normal model.

    Returns jsd_uniform, jsd_cn (nats; jsd_cn is NaN when d <= 2, where the model is undefined),
    vm_var_reduction_pct (measured: 100 * (1 - mean SR variance with levels {0, a, B-a, B} / with {0, 1, 2, 3}),
    a = optimal_inner_level(d); NaN unless B == 3), hist ([atom at 0, nbins interior bins, atom at B], empirical
    probabilities), bin_edges (nbins + 1 floats), d, and the context B, nbins, n_values, inner_level a."""
    if nbins < 1:
        raise ValueError(f"nbins must be >= 1, got {nbins}")
    values = h.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    n = values.size
    if n == 0:
        raise ValueError("activation_stats needs at least one value")
    edges = np.linspace(0.0, float(B), nbins + 1)
    at_lo = values <= 0.0
    at_hi = values >= B
    interior, _ = np.histogram(values[~(at_lo | at_hi)], bins=edges)
    counts = np.concatenate([[at_lo.sum()], interior, [at_hi.sum()]]).astype(np.float64)
    hist = counts / n

    jsd_uniform = jensen_shannon(hist, model_probs("uniform", edges, d, B))
    jsd_cn = jensen_shannon(hist, model_probs("cn", edges, d, B)) if d >= _MIN_CN_GROUP else math.nan

    inner_level = math.nan
    vm_reduction_pct = math.nan
    if B == 3:
        inner_level = optimal_inner_level(d)
        base = sr_variance(values, (0.0, 1.0, 2.0, 3.0)).mean()
        with_vm = sr_variance(values, (0.0, inner_level, 3.0 - inner_level, 3.0)).mean()
        # All values on levels (e.g. d <= 2) leave nothing to reduce.
        vm_reduction_pct = float(100.0 * (1.0 - with_vm / base)) if base > 0 else math.nan

    return {
        "jsd_uniform": jsd_uniform,
        "jsd_cn": jsd_cn,
        "vm_var_reduction_pct": vm_reduction_pct,
        "hist": [float(p) for p in hist],
        "bin_edges": [float(e) for e in edges],
        "d": int(d),
        "B": int(B),
        "nbins": int(nbins),
        "n_values": int(n),
        "inner_level": float(inner_level),
    }
