"""Minimal finite covering (MFC) of one class: distances, k-center, and the search for the smallest covering radius.

A cover at radius eta is a set of centres (points of the class) such that every point lies within eta of one of
them. With covers[i, j] = dist[i, j] <= eta the fewest centres solve the unit-cost set cover of ``setcover``.

Fixed eta (``min_cover``): the fewest centres. Covers come from greedy, Lagrangian greedy and a swap local search,
lower bounds from a packing and the Lagrangian relaxation, and HiGHS's MILP (``highs``) settles what is left on
instances small enough for it. Certified gap: (size - lower bound) / size.

Fixed k (``min_radius_cover``): the smallest radius eta* whose cover needs at most k centres (vertex k-center).
eta* is a pairwise distance in [r_g / 2, r_g], r_g being greedy k-center's radius (farthest-first traversal is a
2-approximation). Each radius the search visits gets a decision "is there a cover with at most k centres?": yes
when one is found (eta* <= eta); no when a lower bound on the cover size exceeds k (then eta* > eta: as eta shrinks
a centre covers fewer points, so every smaller radius needs more than k centres too); open otherwise. The search
keeps

    eta        the smallest radius with a known cover of at most k centres (the returned cover's radius),
    eta_lower  the smallest pairwise distance above the largest refuted radius, and at least r_g / 2,

so eta_lower <= eta* <= eta, and the certified gap is (eta - eta_lower) / eta: the returned radius exceeds the
optimum by at most that fraction of itself. It is 0, status "optimal", when no pairwise distance lies between the
two. The search bisects over the pairwise distances in between; an open decision splits the interval (covers are
then looked for above it, refutations below it), and once every side is exhausted it starts over with twice the
effort, until the gap closes (or reaches ``target_gap``), the time limit passes or the step limit is reached.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from sustainml_exp.families.mfc_coreset.config import MCS_SOLVERS
from sustainml_exp.families.mfc_coreset.selection.highs import HighsProcess, solve_highs
from sustainml_exp.families.mfc_coreset.selection.setcover import (
    ceil_bound,
    count_true,
    greedy_set_cover,
    lagrangian_bound,
    lagrangian_greedy,
    packing,
    swap_search,
    within,
)

log = logging.getLogger("sustainml_exp")

# Distances are float32 (relative rounding ~6e-8); a certificate check allows a few ulps more than that.
CERTIFICATE_RTOL = 1e-6
CERTIFICATE_ATOL = 1e-6
# The Lagrangian's multipliers live on the points with the fewest covering centres (plus the packing's points):
# those carry the LP dual, and any u >= 0 gives a valid bound. On a 6,000-image Fashion-MNIST class 300 iterations
# on 1,000 rows reached a stronger bound (55.0) than on all 6,000 rows (54.0), in a third of the time.
LAGRANGIAN_ROWS = 1000
LAGRANGIAN_ITERATIONS = 300  # per decision at effort 1
SWAP_MOVES = 1000  # swap local search moves per start and decision at effort 1
EFFORT_MAX = 16  # the search stops escalating beyond this multiple of the base effort
# HiGHS's MILP settles open decisions only on covering matrices up to this many nonzeros: its work before the first
# node alone took about 10 s per million nonzeros on 2 shared CPUs (a 6,000-image Fashion-MNIST class has 17-27
# million at the radii of k = 50..10). Each call gets at most this share of the class's time limit.
HIGHS_MAX_NONZEROS = 1_000_000
HIGHS_SHARE = 0.25
# At the end of a fixed-k search the cover at eta is made as small as possible within this share of the time limit.
MINIMISE_SHARE = 0.25


# --------------------------------------------------------------------------------------------------------------
# Distances and k-center
# --------------------------------------------------------------------------------------------------------------


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, *, block: int = 4096) -> torch.Tensor:
    """Euclidean distances (n, m) between the rows of x and y (y=None: x with itself), float32 on x.device.

    Inputs are flattened to (n, d). Blocks of ``block`` rows use ||a||^2 + ||b||^2 - 2 a.b in float64: float64
    keeps the cancellation error of near pairs far below float32 rounding (in float32 it would reach ~1e-3 on
    784-dim pixels), and one matmul per block runs at BLAS / GPU speed. With y=None the result is exactly
    symmetric (each block's mirror is copied, not recomputed) with a zero diagonal.
    """
    if block < 1:
        raise ValueError(f"block={block}; allowed: block >= 1")
    xf = x.reshape(len(x), -1).to(torch.float64)
    symmetric = y is None
    yf = xf if symmetric else y.reshape(len(y), -1).to(device=x.device, dtype=torch.float64)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x has {xf.shape[1]} features per row but y has {yf.shape[1]}")
    n, m = len(xf), len(yf)
    x_sq = (xf * xf).sum(1)
    y_sq = x_sq if symmetric else (yf * yf).sum(1)
    out = torch.empty(n, m, dtype=torch.float32, device=x.device)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        c0 = r0 if symmetric else 0  # symmetric: columns left of the block are the mirror of earlier blocks
        sq = x_sq[r0:r1, None] + y_sq[None, c0:] - 2.0 * (xf[r0:r1] @ yf[c0:].T)
        rows = sq.clamp_min_(0.0).sqrt_().to(torch.float32)
        out[r0:r1, c0:] = rows
        if symmetric:
            out[r1:, r0:r1] = rows[:, r1 - r0:].T
            out[r0:r1, r0:r1].fill_diagonal_(0.0)
    return out


def greedy_kcenter(dist: torch.Tensor, k: int, first: int) -> tuple[np.ndarray, float]:
    """Farthest-first traversal from ``first``: k centre indices in pick order and the covering radius they reach.

    Each next centre is the point farthest from the centres so far (ties: lowest index). The radius is at most
    twice the optimal k-center radius with centres among the points.
    """
    n = dist.shape[0]
    if dist.ndim != 2 or dist.shape[1] != n:
        raise ValueError(f"dist must be a square matrix, got shape {tuple(dist.shape)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k}; allowed: 1 <= k <= {n} (the number of points)")
    if not 0 <= first < n:
        raise ValueError(f"first={first}; allowed: 0 <= first < {n}")
    nearest = dist[first].clone()  # distance of every point to its nearest centre so far
    picked = torch.zeros(n, dtype=torch.bool, device=dist.device)
    picked[first] = True
    centres = [first]
    for _ in range(k - 1):
        # Already picked points are excluded so that duplicates (distance 0 everywhere) never repeat a centre.
        nxt = int(torch.argmax(nearest.masked_fill(picked, -1.0)))
        centres.append(nxt)
        picked[nxt] = True
        torch.minimum(nearest, dist[nxt], out=nearest)
    nearest[picked] = 0.0
    return np.asarray(centres, dtype=np.int64), float(nearest.max())


def candidate_radii(dist: torch.Tensor, lo: float, hi: float, *, symmetric: bool, block: int = 4096) -> np.ndarray:
    """The distinct values of dist in [lo, hi), sorted (float32; only i < j when dist is symmetric).

    Sorted once, the search's bisection steps are binary searches. Pixel distances repeat a lot (squared distances
    are sums of squared multiples of 1/255): a 6,000-image Fashion-MNIST class has 4.8M distinct values among its
    11.8M pairs in greedy k-center's bracket at k = 50."""
    n_rows, n_cols = dist.shape
    columns = torch.arange(n_cols, device=dist.device)
    parts = []
    for r0 in range(0, n_rows, block):
        rows = dist[r0:r0 + block]
        inside = (rows >= lo) & (rows < hi)
        if symmetric:
            inside &= columns[None, :] > torch.arange(r0, r0 + len(rows), device=dist.device)[:, None]
        parts.append(rows[inside].cpu().numpy())
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.float32)


class _Bracket:
    """eta* among the sorted candidate radii and the known feasible radius ``upper``, with the decisions so far."""

    def __init__(self, candidates: np.ndarray, upper: float) -> None:
        self.candidates = candidates
        self.upper = upper  # a cover with at most k centres is known at this radius
        self.refuted = -math.inf  # the largest radius shown to need more than k centres
        # Open decisions: covers are sought above primal_from, refutations below bound_below.
        self.primal_from, self.bound_below = -math.inf, math.inf

    def _span(self, above: float, below: float) -> tuple[int, int]:
        """Indices [i0, i1) of the candidates strictly between ``above`` and ``below``."""
        return (int(np.searchsorted(self.candidates, above, side="right")),
                int(np.searchsorted(self.candidates, below, side="left")))

    @property
    def lower(self) -> float:
        """The smallest candidate above the largest refuted radius (the upper radius if none is left): eta* >= it."""
        i0, i1 = self._span(self.refuted, self.upper)
        return float(self.candidates[i0]) if i0 < i1 else self.upper

    @property
    def gap(self) -> float:
        return (self.upper - self.lower) / self.upper

    def remaining(self) -> int:
        i0, i1 = self._span(self.refuted, self.upper)
        return max(i1 - i0, 0)

    def sides(self) -> list[tuple[int, int]]:
        """The non-empty index spans still to try: above the open decisions (for covers), below them (for
        refutations); one span while nothing is open."""
        spans = [self._span(max(self.refuted, self.primal_from), self.upper),
                 self._span(self.refuted, min(self.upper, self.bound_below))]
        return [span for span in dict.fromkeys(spans) if span[0] < span[1]]

    def median(self, span: tuple[int, int]) -> float:
        return float(self.candidates[(span[0] + span[1] - 1) // 2])

    def record(self, eta: float, answer: bool | None) -> None:
        if answer:
            self.upper = min(self.upper, eta)
        elif answer is False:
            self.refuted = max(self.refuted, eta)
        else:
            self.primal_from, self.bound_below = max(self.primal_from, eta), min(self.bound_below, eta)

    def reopen(self) -> None:
        self.primal_from, self.bound_below = -math.inf, math.inf


# --------------------------------------------------------------------------------------------------------------
# The covering matrix in the sparse form HiGHS takes
# --------------------------------------------------------------------------------------------------------------


def coverage_matrix(dist: torch.Tensor, eta: float, *, block: int = 4096) -> sp.csc_matrix:
    """Sparse A (CSC, float64 ones) with A[i, j] = dist[i, j] <= eta: column j lists the points centre j covers.

    Built block by block of columns from torch.nonzero on dist's device, without a Python loop over entries.
    """
    n_rows, n_cols = dist.shape
    indptr = [np.zeros(1, dtype=np.int64)]
    indices = []
    offset = 0
    for c0 in range(0, n_cols, block):
        within = (dist[:, c0:c0 + block] <= eta).T  # (columns of the block, rows)
        per_column = within.sum(1).cpu().numpy()
        # nonzero lists (column, row) pairs ordered by column, then row: already CSC order.
        indices.append(torch.nonzero(within)[:, 1].to(torch.int32).cpu().numpy())
        indptr.append(offset + np.cumsum(per_column))
        offset += int(per_column.sum())
    ind = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32)
    ptr = np.concatenate(indptr)
    return sp.csc_matrix((np.ones(len(ind)), ind, ptr), shape=(n_rows, n_cols))


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CoveringResult:
    """A cover of one class and how far it is proven (see the module docstring for the gap's definition).

    status: "optimal" (gap 0: fixed k, eta proven the smallest radius for the budget; fixed eta, the cover proven
    minimal), "feasible" (a valid cover; the gap bounds how far from optimal) or "greedy" (solver=greedy)."""

    centres: np.ndarray  # sorted indices into the class
    eta: float  # the covering radius searched for (fixed k) or given (fixed eta)
    certificate: float  # max over points of the distance to the nearest centre (<= eta)
    assignment: np.ndarray  # per point: position in centres of its nearest centre (ties: first)
    multiplicities: np.ndarray  # points assigned per centre, aligned with centres; sums to the class size
    status: str
    # Certified relative gap of what was minimised. Fixed k: (eta - eta_lower) / eta. Fixed eta: (k - lower_bound) / k.
    gap: float
    eta_lower: float  # proven lower bound on the smallest radius with at most k centres (fixed eta: eta)
    lower_bound: float  # proven lower bound on the number of centres a cover at eta needs
    k_greedy: int  # greedy set cover's size at eta
    lagrangian_bound: float  # best Lagrangian bound on the cover size at eta (nan: not computed)
    undecided: int = 0  # fixed k: decisions that no bound and no search settled
    steps: int = 0  # fixed k: decisions made
    kcenter_radius: float = math.nan  # greedy k-center radius r_g (fixed k)
    time_limited: bool = False  # the time limit ended the search before the gap closed
    # Fixed k: decisions by what settled them (greedy, packing, lagrangian, local_search, highs) and "open".
    decided_by: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Fixed k: (seconds since the start, eta, eta_lower) after k-center and after every decision.
    trace: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.centres)


def assign_to_centres(dist: torch.Tensor, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Nearest centre of every point (ties: first in ``centres``), points per centre, and the largest distance."""
    to_centres = dist[:, torch.as_tensor(centres, dtype=torch.long, device=dist.device)]
    nearest, assignment = to_centres.min(1)
    assignment = assignment.cpu().numpy().astype(np.int64)
    multiplicities = np.bincount(assignment, minlength=len(centres)).astype(np.int64)
    return assignment, multiplicities, float(nearest.max()) if len(nearest) else 0.0


def pad_farthest(dist: torch.Tensor, centres: np.ndarray, k: int) -> np.ndarray:
    """``centres`` plus farthest-first points (ties: lowest index) until there are k of them, sorted.

    Extra centres never uncover a point, so a cover at eta stays one (and its radius can only shrink).
    """
    n = dist.shape[0]
    if not len(centres) <= k <= n:
        raise ValueError(f"k={k}; allowed: {len(centres)} (the centres given) <= k <= {n} (the number of points)")
    chosen = [int(c) for c in centres]
    picked = torch.zeros(n, dtype=torch.bool, device=dist.device)
    if chosen:
        picked[torch.as_tensor(chosen, device=dist.device)] = True
        nearest = dist[:, picked].min(1).values
    else:
        nearest = torch.full((n,), torch.inf, device=dist.device)
    while len(chosen) < k:
        nxt = int(torch.argmax(nearest.masked_fill(picked, -1.0)))
        chosen.append(nxt)
        picked[nxt] = True
        torch.minimum(nearest, dist[:, nxt], out=nearest)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def verify_certificate(data: torch.Tensor, centres: np.ndarray, eta: float, *, points: bool | None = None,
                       block: int = 4096) -> bool:
    """Every point within eta (+ float32 tolerance) of a centre.

    ``data`` is a square distance matrix or the points themselves (then the distances to the centres are
    recomputed, independently of any matrix the cover was found on). points=None infers: a square 2-D tensor is
    a distance matrix; pass points=True for n points with n features.
    """
    if points is None:
        points = not (data.ndim == 2 and data.shape[0] == data.shape[1])
    if len(centres) == 0:
        return len(data) == 0
    index = torch.as_tensor(np.asarray(centres), dtype=torch.long, device=data.device)
    to_centres = pairwise_distances(data, data[index], block=block) if points else data[:, index]
    worst = float(to_centres.min(1).values.max())
    return worst <= eta + CERTIFICATE_RTOL * abs(eta) + CERTIFICATE_ATOL


# --------------------------------------------------------------------------------------------------------------
# What is known at one radius, and the work that improves it
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _AtRadius:
    """What is known about the covers at one eta."""

    cover: np.ndarray  # best cover found
    k_greedy: int
    lower: int  # proven lower bound on the cover size
    packed: np.ndarray  # a packing (its points need a centre each)
    lagrangian: float = math.nan
    multipliers: np.ndarray | None = None
    effort: int = 0  # the largest effort spent here on the Lagrangian and the swap search
    highs_tried: bool = False

    @property
    def proven(self) -> bool:
        return len(self.cover) <= self.lower


class _CoverSearch:
    """Covers and bounds at the radii of one distance matrix, with a shared deadline and timings."""

    def __init__(self, dist: torch.Tensor, *, exact: bool, deadline: float, time_limit_s: float, seed: int,
                 block: int, highs: HighsProcess) -> None:
        self.dist = dist
        self.exact = exact
        self.deadline = deadline
        self.time_limit_s = time_limit_s
        self.seed = seed
        self.block = block
        self.highs = highs
        self.timings = {key: 0.0 for key in ("greedy_s", "packing_s", "lagrangian_s", "guided_greedy_s", "swap_s",
                                             "highs_s")}
        self.at: dict[float, _AtRadius] = {}
        self.decided_by: Counter[str] = Counter()
        # Rows instead of strided columns in the set cover loops (pairwise_distances is exactly symmetric).
        self.symmetric = dist.shape[0] == dist.shape[1] and bool(torch.equal(dist, dist.T))
        self._covers: tuple[float, torch.Tensor] | None = None
        # An open HiGHS decision at eta_t is expected to stay open at every larger eta (a denser matrix): HiGHS is
        # not asked there again.
        self.highs_open_from = math.inf

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def _timed(self, key: str, begin: float) -> None:
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        self.timings[key] += time.perf_counter() - begin

    def covers(self, eta: float) -> torch.Tensor:
        if self._covers is None or self._covers[0] != eta:
            self._covers = (eta, within(self.dist, eta))
        return self._covers[1]

    def cheap(self, eta: float, size_limit: int | None = None) -> _AtRadius:
        """Greedy cover and packing at eta (cached); the packing stops once above size_limit."""
        if eta in self.at:
            return self.at[eta]
        covers = self.covers(eta)
        begin = time.perf_counter()
        greedy = greedy_set_cover(covers, symmetric=self.symmetric)
        self._timed("greedy_s", begin)
        begin = time.perf_counter()
        # A packing never exceeds a cover: with greedy within the limit it cannot be cut short.
        packed = packing(covers, stop_above=size_limit, symmetric=self.symmetric)
        self._timed("packing_s", begin)
        state = _AtRadius(cover=greedy, k_greedy=len(greedy), lower=len(packed), packed=packed)
        self.at[eta] = state
        return state

    def offer(self, eta: float, cover: np.ndarray) -> None:
        """A cover known to be valid at eta (e.g. k-center's at its radius)."""
        state = self.cheap(eta)
        if len(cover) < len(state.cover):
            state.cover = np.sort(np.asarray(cover, dtype=np.int64))

    def bound(self, eta: float, state: _AtRadius, effort: int, stop_above: int) -> None:
        """Lagrangian ascent at eta from the best multipliers so far (first: the packing's indicator)."""
        covers = self.covers(eta)
        n = covers.shape[0]
        if state.multipliers is None:
            start = np.zeros(n)
            start[state.packed] = 1.0
        else:
            start = state.multipliers
        rows = None
        if n > LAGRANGIAN_ROWS:
            degree = count_true(covers, 1).cpu().numpy()
            rows = np.union1d(np.argsort(degree, kind="stable")[:LAGRANGIAN_ROWS], state.packed)
        begin = time.perf_counter()
        result = lagrangian_bound(covers, start, target=len(state.cover), stop_above=stop_above,
                                  max_iterations=LAGRANGIAN_ITERATIONS * effort, deadline=self.deadline, rows=rows)
        self._timed("lagrangian_s", begin)
        if not result.bound <= state.lagrangian:  # (nan-safe) keep the best multipliers
            state.lagrangian, state.multipliers = result.bound, result.multipliers
        state.lower = max(state.lower, ceil_bound(result.bound))

    def search_cover(self, eta: float, state: _AtRadius, effort: int, size: int) -> None:
        """Lagrangian greedy from the best multipliers, then a swap search for a cover of at most ``size`` centres
        from the best cover here and from the best cover at the nearest larger radius searched."""
        covers = self.covers(eta)
        begin = time.perf_counter()
        if state.multipliers is not None and state.effort == 0:
            guided = lagrangian_greedy(covers, state.multipliers, symmetric=self.symmetric)
            if len(guided) < len(state.cover):
                state.cover = guided
        self._timed("guided_greedy_s", begin)
        if len(state.cover) <= size:
            return
        above = [r for r in self.at if r > eta and len(self.at[r].cover) <= size]
        starts = [self.at[min(above)].cover] if above else []
        starts.append(state.cover)
        begin = time.perf_counter()
        for attempt, start in enumerate(starts):
            found = swap_search(covers, start, size, max_moves=SWAP_MOVES * effort,
                                seed=self.seed + 7919 * effort + attempt, deadline=self.deadline,
                                symmetric=self.symmetric)
            if found is not None and len(found) < len(state.cover):
                state.cover = found
                break
        self._timed("swap_s", begin)

    def highs_settle(self, eta: float, state: _AtRadius, size_limit: int | None) -> None:
        """HiGHS's MILP at eta, where it can finish: decision (size_limit) or minimisation from the best cover."""
        if state.highs_tried or eta >= self.highs_open_from:
            return
        covers = self.covers(eta)
        if int(count_true(covers, 1).sum()) > HIGHS_MAX_NONZEROS or self.time_left() <= 0:
            return
        state.highs_tried = True
        limit = min(self.time_left(), HIGHS_SHARE * self.time_limit_s)
        outcome = solve_highs(coverage_matrix(self.dist, eta, block=self.block), integer=True, time_limit_s=limit,
                              size_limit=size_limit, start=state.cover, process=self.highs)
        self.timings["highs_s"] += outcome.seconds
        if outcome.centres is not None and len(outcome.centres) < len(state.cover):
            state.cover = outcome.centres
        if math.isfinite(outcome.dual_bound):
            state.lower = max(state.lower, ceil_bound(outcome.dual_bound))
        settled = outcome.model_status in ("kOptimal", "kInfeasible", "kObjectiveTarget", "kObjectiveBound")
        if not settled:
            self.highs_open_from = min(self.highs_open_from, eta)
        log.debug("mcs: MILP at eta=%.5g (limit %s): %s, cover %d, lower %d, %.1f s", eta, size_limit,
                  outcome.model_status, len(state.cover), state.lower, outcome.seconds)

    def decide(self, eta: float, k: int, effort: int) -> bool | None:
        """Is there a cover with at most k centres at eta? True / False when shown, None when left open."""
        answer, by = self._decide(eta, k, effort)
        self.decided_by[by] += 1
        return answer

    def _decide(self, eta: float, k: int, effort: int) -> tuple[bool | None, str]:
        fresh = eta not in self.at
        state = self.cheap(eta, size_limit=k)
        if len(state.cover) <= k:
            return True, "greedy" if fresh else "local_search"
        if state.lower > k:
            return False, "packing" if fresh else "lagrangian"
        if not self.exact or state.effort >= effort:
            return None, "open"
        self.bound(eta, state, effort, stop_above=k)
        if state.lower > k:
            return False, "lagrangian"
        self.search_cover(eta, state, effort, k)
        state.effort = effort
        if len(state.cover) <= k:
            return True, "local_search"
        self.highs_settle(eta, state, size_limit=k)
        if len(state.cover) <= k:
            return True, "highs"
        if state.lower > k:
            return False, "highs"
        return None, "open"

    def minimise(self, eta: float, deadline: float) -> _AtRadius:
        """The smallest cover at eta that the bounds, the swap search and (small instances) HiGHS find by
        ``deadline``."""
        state = self.cheap(eta)
        if not self.exact:
            return state
        saved, self.deadline = self.deadline, min(self.deadline, deadline)
        try:
            effort = 1
            while not state.proven and self.time_left() > 0 and effort <= EFFORT_MAX:
                self.bound(eta, state, effort, stop_above=len(state.cover) - 1)
                if state.proven:
                    break
                size = len(state.cover)
                self.search_cover(eta, state, effort, size - 1)
                state.effort = max(state.effort, effort)
                if len(state.cover) < size:
                    continue  # smaller again: try one fewer at the same effort
                self.highs_settle(eta, state, size_limit=None)
                effort *= 2
        finally:
            self.deadline = saved
        return state

    def status(self, state: _AtRadius) -> str:
        if not self.exact:
            return "greedy"
        return "optimal" if state.proven else "feasible"


def _check_solver(solver: str) -> bool:
    if solver not in MCS_SOLVERS:
        raise ValueError(f"solver={solver!r}; allowed: {', '.join(MCS_SOLVERS)}")
    return solver == "exact"


def _check_time_limit(time_limit_s: float) -> None:
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s={time_limit_s}; allowed: time_limit_s > 0")


def _finish(search: _CoverSearch, dist: torch.Tensor, eta: float, state: _AtRadius, *, status: str, gap: float,
            eta_lower: float, started: float, **extra) -> CoveringResult:
    centres = np.sort(np.asarray(state.cover, dtype=np.int64))
    assignment, multiplicities, certificate = assign_to_centres(dist, centres)
    timings = dict(search.timings)
    timings.update(extra.pop("extra_timings", {}))
    timings["total_s"] = time.perf_counter() - started
    return CoveringResult(
        centres=centres, eta=float(eta), certificate=certificate, assignment=assignment,
        multiplicities=multiplicities, status=status, gap=gap, eta_lower=float(eta_lower),
        lower_bound=float(min(state.lower, len(centres))), k_greedy=state.k_greedy,
        lagrangian_bound=state.lagrangian, timings=timings, **extra)


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def min_cover(dist: torch.Tensor, eta: float, *, solver: str = "exact", time_limit_s: float = 60.0,
              seed: int = 0, block: int = 4096) -> CoveringResult:
    """Fixed eta: the fewest centres covering every point within eta, and a lower bound on that number."""
    started = time.perf_counter()
    exact = _check_solver(solver)
    _check_time_limit(time_limit_s)
    eta = float(eta)
    with HighsProcess() as highs:
        search = _CoverSearch(dist, exact=exact, deadline=started + time_limit_s, time_limit_s=time_limit_s,
                              seed=seed, block=block, highs=highs)
        state = search.minimise(eta, search.deadline)
    size = len(state.cover)
    return _finish(search, dist, eta, state, status=search.status(state),
                   gap=(size - min(state.lower, size)) / size if size else 0.0, eta_lower=eta, started=started,
                   time_limited=not state.proven and search.time_left() <= 0)


def min_radius_cover(dist: torch.Tensor, k: int, *, first: int = 0, solver: str = "exact",
                     time_limit_s: float = 60.0, target_gap: float = 0.0, max_steps: int = 100,
                     block: int = 4096) -> CoveringResult:
    """Fixed k: the smallest eta whose cover needs at most k centres, and a small cover at that eta.

    The search (module docstring) stops once the certified gap is at most ``target_gap``, after ``max_steps``
    decisions, or at ``time_limit_s`` seconds after the start (overrunning by at most the greedy cover and packing
    of the decision under way, about a second on a 6,000-image class). The returned cover may have fewer than k
    centres: it is made as small as the remaining time allows at the final eta (the budget is an upper bound,
    nothing is padded)."""
    started = time.perf_counter()
    exact = _check_solver(solver)
    _check_time_limit(time_limit_s)
    n = dist.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k}; allowed: 1 <= k <= {n} (the number of points)")
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}; allowed: max_steps >= 1")
    if not 0 <= target_gap < 1:
        raise ValueError(f"target_gap={target_gap}; allowed: 0 <= target_gap < 1")
    deadline = started + time_limit_s

    begin = time.perf_counter()
    kcenter, radius = greedy_kcenter(dist, k, first)
    kcenter_s = time.perf_counter() - begin
    effort, undecided, steps, side = 1, 0, 0, 0
    trace: list[tuple[float, float, float]] = []
    with HighsProcess() as highs:
        search = _CoverSearch(dist, exact=exact, deadline=deadline, time_limit_s=time_limit_s, seed=first,
                              block=block, highs=highs)
        search.offer(radius, kcenter)
        begin = time.perf_counter()
        # eta* is a pairwise distance in [r_g / 2, r_g]; r_g is already known to be feasible.
        bracket = _Bracket(candidate_radii(dist, radius / 2, radius, symmetric=search.symmetric, block=block),
                           radius)
        candidates_s = time.perf_counter() - begin
        trace.append((time.perf_counter() - started, bracket.upper, bracket.lower))
        while steps < max_steps and bracket.gap > target_gap and search.time_left() > 0:
            sides = bracket.sides()
            if not sides:
                if not exact or effort >= EFFORT_MAX:
                    break
                # Every radius left is open at this effort: try them again with twice the effort.
                effort *= 2
                bracket.reopen()
                continue
            mid = bracket.median(sides[side % len(sides)])
            side += 1
            answer = search.decide(mid, k, effort)
            steps += 1
            undecided += answer is None
            bracket.record(mid, answer)
            trace.append((time.perf_counter() - started, bracket.upper, bracket.lower))
            log.debug("mcs: step %d eta=%.5g -> %s (effort %d; eta in [%.5g, %.5g], %d candidates)", steps, mid,
                      answer, effort, bracket.lower, bracket.upper, bracket.remaining())
        time_limited = bracket.gap > target_gap and search.time_left() <= 0
        state = search.minimise(bracket.upper, min(deadline, time.perf_counter() + MINIMISE_SHARE * time_limit_s))
    status = "greedy" if not exact else ("optimal" if bracket.gap == 0 else "feasible")
    return _finish(search, dist, bracket.upper, state, status=status, gap=bracket.gap, eta_lower=bracket.lower,
                   started=started, undecided=undecided, steps=steps, kcenter_radius=radius,
                   time_limited=time_limited, trace=trace, decided_by=dict(search.decided_by),
                   extra_timings={"kcenter_s": kcenter_s, "candidates_s": candidates_s})
