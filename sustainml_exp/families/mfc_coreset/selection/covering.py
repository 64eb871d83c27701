"""Minimal finite covering (MFC) of one class: distances, k-center, set cover bounds and the exact HiGHS MILP.

A cover at radius ``eta`` is a set of centres (points of the class) such that every point lies within ``eta`` of
one of them. With ``A[i, j] = dist[i, j] <= eta`` the smallest cover is the unit-cost set cover

    minimise sum(s)  subject to  A s >= 1,  s binary.

Fixed eta (``min_cover``): greedy set cover gives an upper bound, a disjoint packing and the LP relaxation lower
bounds, and the HiGHS MILP runs only when they disagree. Fixed k (``min_radius_cover``): the smallest eta whose
cover needs at most k centres. Greedy k-center's radius r_g brackets the optimum in [r_g / 2, r_g] (farthest-first
traversal is a 2-approximation), and the optimum is one of the pairwise distances, so the search bisects over the
distances inside the bracket, answering each decision "does a cover of size <= k exist at eta?" with the cheapest
argument that settles it (greedy cover <= k: yes; packing or ceil(LP) > k: no; MILP otherwise).

Everything here works on a square distance matrix on any torch device; HiGHS runs on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import highspy
import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger("sustainml_exp")

STATUSES = ("optimal", "time_limit", "greedy")  # best to worst: MCSSelector reports the worst over classes
# Distances are float32 (relative rounding ~6e-8); a certificate check allows a few ulps more than that.
CERTIFICATE_RTOL = 1e-6
CERTIFICATE_ATOL = 1e-6
# HiGHS reports continuous values; anything closer than this to 0 or 1 counts as that integer.
INTEGRALITY_TOL = 1e-6
# HiGHS's presolve does not look at the time limit: on a 6,000-point Fashion-MNIST class (13M nonzeros) it alone
# ran 50-80 s past a 20 s limit. The LP relaxation never uses it (dual simplex obeys the limit and set cover LPs
# gain little from presolve); the MILP uses it up to this many nonzeros.
MILP_PRESOLVE_MAX_NONZEROS = 2_000_000
# Nor does the MILP's work before its first node: with a 20 s limit (presolve off, 2 shared CPUs) it stopped after
# 21 s at 2.1M nonzeros, 38-70 s at 4.3M and 278 s at 17.5M, about 10 s per million nonzeros. A MILP whose setup
# alone would outlast the time limit by that estimate is not started: its decision is left open.
MILP_SETUP_S_PER_NONZERO = 1e-5


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


# --------------------------------------------------------------------------------------------------------------
# Set cover at one radius: greedy, packing, LP, MILP
# --------------------------------------------------------------------------------------------------------------


def greedy_set_cover(covers: torch.Tensor, *, symmetric: bool = False) -> np.ndarray:
    """Greedy set cover of ``covers[i, j]`` (point i within eta of centre j), then redundant centres dropped.

    Picks the centre covering most uncovered points (ties: lowest index) until all are covered, then walks the
    picks backwards and drops any centre whose points all have another chosen centre. Returns sorted indices.
    Every row must have a True (with covers = dist <= eta each point covers itself). symmetric=True (covers equals
    its transpose) reads rows instead of strided columns.
    """
    n_points = covers.shape[0]
    uncovered = torch.ones(n_points, dtype=torch.bool, device=covers.device)
    gain = covers.sum(0, dtype=torch.int32)  # points each centre would newly cover
    chosen: list[int] = []
    while True:
        best_gain, best = (int(v) for v in torch.max(gain, 0))
        if best_gain == 0:
            break
        newly = uncovered & (covers[best] if symmetric else covers[:, best])
        uncovered &= ~newly
        # Only the newly covered rows change anyone's gain: total work over the loop is one pass over covers.
        gain -= covers[newly].sum(0, dtype=torch.int32)
        chosen.append(best)
    if bool(uncovered.any()):
        raise ValueError("a point is covered by no centre (is the diagonal of dist zero?)")
    picked = covers[chosen].T if symmetric else covers[:, chosen]
    times_covered = picked.sum(1, dtype=torch.int32)
    kept = []
    for j in reversed(chosen):
        column = covers[j] if symmetric else covers[:, j]
        if int(times_covered[column].min()) >= 2:
            times_covered -= column.to(torch.int32)
        else:
            kept.append(j)
    return np.sort(np.asarray(kept, dtype=np.int64))


def packing_lower_bound(covers: torch.Tensor, *, stop_above: int | None = None, symmetric: bool = False) -> int:
    """Points no two of which share a centre (a feasible dual of the set cover): each needs its own centre.

    Greedy: take the unblocked point with the fewest covering centres, block every point sharing a centre with it.
    ``stop_above``: return as soon as the packing exceeds it (enough to refute a cover of that size).
    symmetric=True (covers equals its transpose) gathers contiguous rows instead of strided columns.
    """
    degree = covers.sum(1, dtype=torch.int32)
    order = torch.argsort(degree, stable=True)
    blocked = torch.zeros(covers.shape[0], dtype=torch.bool, device=covers.device)
    packed = 0
    while stop_above is None or packed <= stop_above:
        free = torch.nonzero(~blocked[order])
        if len(free) == 0:
            break
        point = order[free[0, 0]]
        packed += 1
        centres = covers[point]
        blocked |= covers[centres].any(0) if symmetric else covers[:, centres].any(1)
    return packed


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


@dataclass
class HighsOutcome:
    """One HiGHS run on a set cover. ``centres`` is a verified cover (None: HiGHS returned none)."""

    model_status: str  # HiGHS's own name, e.g. "kOptimal", "kTimeLimit", "kInfeasible"
    centres: np.ndarray | None
    objective: float  # LP: relaxation optimum (nan unless solved); MILP: size of centres (nan: none)
    dual_bound: float  # proven lower bound on the cover size (-inf: none)
    seconds: float

    @property
    def solved(self) -> bool:
        return self.model_status == "kOptimal"


def _status_name(status) -> str:
    return getattr(status, "name", str(status).rsplit(".", 1)[-1])


def solve_highs(cover: sp.csc_matrix, *, integer: bool, time_limit_s: float, mip_rel_gap: float = 0.0,
                size_limit: int | None = None, start: np.ndarray | None = None) -> HighsOutcome:
    """Unit-cost set cover min 1's s.t. A s >= 1 with HiGHS: LP relaxation (0 <= s <= 1) or MILP (s binary).

    ``size_limit`` (MILP): decision mode, HiGHS stops at the first cover of at most that size ("kObjectiveTarget")
    or proves the optimum larger ("kOptimal" above the limit, or "kInfeasible"). ``start``: a known cover handed
    to the MILP as incumbent, so a time-out always has a cover to return. Never raises on a time-out: the outcome
    says what was reached.
    """
    n_rows, n_cols = cover.shape
    integrality = np.full(n_cols, 1 if integer else 0, dtype=np.int32)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    if not integer or cover.nnz > MILP_PRESOLVE_MAX_NONZEROS:
        h.setOptionValue("presolve", "off")
    if integer:
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    if size_limit is not None:
        # Stop at the first cover within the limit (kObjectiveTarget) and prune nodes that cannot reach it.
        h.setOptionValue("objective_target", size_limit + 0.5)
        h.setOptionValue("objective_bound", size_limit + 0.5)
    passed = h.passModel(n_cols, n_rows, cover.nnz, int(highspy.MatrixFormat.kColwise),
                         int(highspy.ObjSense.kMinimize), 0.0, np.ones(n_cols), np.zeros(n_cols), np.ones(n_cols),
                         np.ones(n_rows), np.full(n_rows, highspy.kHighsInf), cover.indptr.astype(np.int32),
                         cover.indices.astype(np.int32), cover.data.astype(np.float64), integrality)
    if passed != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS rejected the {n_rows} x {n_cols} set cover model ({_status_name(passed)})")
    if integer and start is not None and (size_limit is None or len(start) <= size_limit):
        solution = highspy.HighsSolution()
        values = np.zeros(n_cols)
        values[start] = 1.0
        solution.col_value = values.tolist()
        h.setSolution(solution)
    begin = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - begin
    status = _status_name(h.getModelStatus())
    info = h.getInfo()
    has_solution = int(info.primal_solution_status) == 2  # kSolutionStatusFeasible
    values = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_solution else None
    if not integer:
        if status != "kOptimal":
            return HighsOutcome(status, None, math.nan, -math.inf, seconds)
        lp_value = float(info.objective_function_value)
        integral = bool(np.all((values < INTEGRALITY_TOL) | (values > 1 - INTEGRALITY_TOL)))
        centres = np.flatnonzero(values > 0.5) if integral else None
        if centres is not None and not _is_cover(cover, centres):
            centres = None
        return HighsOutcome(status, centres, lp_value, lp_value, seconds)
    centres = np.flatnonzero(values > 0.5) if values is not None else None
    if centres is not None and not _is_cover(cover, centres):
        log.warning("HiGHS returned a set cover solution that leaves points uncovered; ignoring it")
        centres = None
    dual = float(info.mip_dual_bound)
    if status == "kOptimal" and centres is not None and mip_rel_gap == 0:
        dual = max(dual, float(len(centres)))
    if status == "kInfeasible" and size_limit is not None:
        dual = max(dual, float(size_limit + 1))  # no cover within the limit exists
    if not math.isfinite(dual):
        dual = -math.inf
    objective = float(len(centres)) if centres is not None else math.nan
    return HighsOutcome(status, centres, objective, dual, seconds)


def _is_cover(cover: sp.csc_matrix, centres: np.ndarray) -> bool:
    if len(centres) == 0:
        return cover.shape[0] == 0
    return bool(np.all(np.asarray(cover[:, centres].sum(1)).ravel() >= 1))


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CoveringResult:
    """A cover of one class and how far it is proven.

    status: "optimal" (eta proven smallest for the budget and the cover size proven minimal at eta; with
    mip_rel_gap > 0 "minimal" means within that gap), "time_limit" (a HiGHS time limit or the bisection step limit
    left something unproven: the cover is valid, eta is an upper bound) or "greedy" (solver=greedy: no proofs
    attempted beyond the cheap packing bound).
    """

    centres: np.ndarray  # sorted indices into the class
    eta: float  # the covering radius searched for (fixed k) or given (fixed eta)
    certificate: float  # max over points of the distance to the nearest centre (<= eta)
    assignment: np.ndarray  # per point: position in centres of its nearest centre (ties: first)
    multiplicities: np.ndarray  # points assigned per centre, aligned with centres; sums to the class size
    status: str
    gap: float  # (len(centres) - lower_bound) / len(centres): the cover size's relative MIP gap at eta
    lower_bound: float  # proven lower bound on the cover size at eta (packing, ceil(LP), MIP dual bound)
    k_greedy: int  # greedy set cover size at eta
    lp_bound: float  # LP relaxation optimum at eta (nan: not solved, i.e. solver=greedy or time limit)
    eta_lower: float  # proven lower bound on the smallest radius for the budget (fixed eta: eta)
    undecided: int = 0  # bisection decisions a time limit left open (treated as "no")
    steps: int = 0  # bisection decisions made
    kcenter_radius: float = math.nan  # greedy k-center radius r_g (fixed k)
    timings: dict[str, float] = field(default_factory=dict)

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
# Decisions at one radius, with the work they share cached
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Bounds:
    """What is known about the smallest cover at one eta."""

    cover: np.ndarray | None = None  # best cover found
    nonzeros: int = 0  # of the coverage matrix A
    k_greedy: int = -1
    packing: int = 0
    lp: float = math.nan
    lower: float = 0.0  # best proven lower bound
    highs_timed_out: bool = False
    minimised: bool = False  # the minimisation MILP finished (within mip_rel_gap)


class _CoverSearch:
    """Set cover bounds at a given eta on one distance matrix, accumulating timings."""

    def __init__(self, dist: torch.Tensor, *, exact: bool, time_limit_s: float, mip_rel_gap: float,
                 block: int) -> None:
        self.dist = dist
        self.exact = exact
        self.time_limit_s = time_limit_s
        self.mip_rel_gap = mip_rel_gap
        self.block = block
        self.timings = {"greedy_s": 0.0, "packing_s": 0.0, "build_s": 0.0, "lp_s": 0.0, "milp_s": 0.0}
        # An LP that hit the time limit at eta_t is expected to hit it at every larger eta too (same size, denser
        # matrix): HiGHS is not asked again there, which keeps a dense class to about one LP time-out.
        self.highs_skip_from = math.inf
        self.lp_refutes_below = math.inf  # decisions: the smallest eta whose LP bound was <= k
        self.cache: dict[float, _Bounds] = {}
        # Rows instead of strided columns in the greedy loops (pairwise_distances is exactly symmetric).
        self.symmetric = dist.shape[0] == dist.shape[1] and bool(torch.equal(dist, dist.T))
        self._sparse: tuple[float, sp.csc_matrix] | None = None

    def _timed(self, key: str, begin: float) -> None:
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        self.timings[key] += time.perf_counter() - begin

    def sparse(self, eta: float) -> sp.csc_matrix:
        if self._sparse is None or self._sparse[0] != eta:
            begin = time.perf_counter()
            self._sparse = (eta, coverage_matrix(self.dist, eta, block=self.block))
            self._timed("build_s", begin)
        return self._sparse[1]

    def cheap(self, eta: float, packing_limit: int | None = None) -> _Bounds:
        """Greedy cover and packing bound at eta (cached); the packing stops once above packing_limit."""
        if eta in self.cache:
            return self.cache[eta]
        covers = self.dist <= eta
        begin = time.perf_counter()
        greedy = greedy_set_cover(covers, symmetric=self.symmetric)
        self._timed("greedy_s", begin)
        begin = time.perf_counter()
        # A packing never exceeds a cover: with greedy within the limit it cannot be cut short.
        packing = packing_lower_bound(covers, stop_above=packing_limit, symmetric=self.symmetric)
        self._timed("packing_s", begin)
        bounds = _Bounds(cover=greedy, nonzeros=int(covers.sum()), k_greedy=len(greedy), packing=packing,
                         lower=float(packing))
        self.cache[eta] = bounds
        return bounds

    def may_use_highs(self, eta: float) -> bool:
        return self.exact and eta < self.highs_skip_from

    def lp(self, eta: float) -> _Bounds:
        bounds = self.cheap(eta)
        if not math.isnan(bounds.lp) or bounds.highs_timed_out or not self.may_use_highs(eta):
            return bounds
        cover = self.sparse(eta)
        outcome = solve_highs(cover, integer=False, time_limit_s=self.time_limit_s)
        self.timings["lp_s"] += outcome.seconds
        if not outcome.solved:
            bounds.highs_timed_out = True
            self.highs_skip_from = min(self.highs_skip_from, eta)
            log.info("mcs: LP at eta=%.5g stopped (%s) after %.1f s; HiGHS skipped for eta >= %.5g",
                     eta, outcome.model_status, outcome.seconds, eta)
            return bounds
        log.debug("mcs: LP at eta=%.5g: %.3f (%d nonzeros), %.1f s", eta, outcome.objective, cover.nnz,
                  outcome.seconds)
        bounds.lp = outcome.objective
        bounds.lower = max(bounds.lower, math.ceil(outcome.objective - INTEGRALITY_TOL))
        if outcome.centres is not None and len(outcome.centres) < len(bounds.cover):
            bounds.cover = outcome.centres  # an integral LP optimum is an optimal cover
        return bounds

    def milp(self, eta: float, size_limit: int | None) -> _Bounds:
        """Run the MILP at eta: decision (size_limit) or minimisation from the best known cover."""
        bounds = self.cheap(eta)
        if bounds.highs_timed_out or not self.may_use_highs(eta) or len(bounds.cover) <= bounds.lower:
            return bounds
        if size_limit is not None and bounds.lower > size_limit:
            return bounds
        if bounds.nonzeros * MILP_SETUP_S_PER_NONZERO > self.time_limit_s:
            log.info("mcs: MILP at eta=%.5g not started: its %d nonzeros would take HiGHS past the %g s limit "
                     "before the first node", eta, bounds.nonzeros, self.time_limit_s)
            bounds.highs_timed_out = True
            return bounds
        # Decisions are asked exactly: a gap-stopped "no" would prove nothing. The gap applies to minimisations.
        gap = self.mip_rel_gap if size_limit is None else 0.0
        outcome = solve_highs(self.sparse(eta), integer=True, time_limit_s=self.time_limit_s, mip_rel_gap=gap,
                              size_limit=size_limit, start=bounds.cover)
        self.timings["milp_s"] += outcome.seconds
        if outcome.centres is not None and len(outcome.centres) < len(bounds.cover):
            bounds.cover = outcome.centres
        if math.isfinite(outcome.dual_bound):
            bounds.lower = max(bounds.lower, math.ceil(outcome.dual_bound - INTEGRALITY_TOL))
        if outcome.model_status not in ("kOptimal", "kInfeasible", "kObjectiveTarget", "kObjectiveBound"):
            bounds.highs_timed_out = True
        elif outcome.model_status == "kOptimal" and size_limit is None:
            # Minimal within mip_rel_gap (the gap still reports how far the proof got).
            bounds.minimised = True
        log.debug("mcs: MILP at eta=%.5g (limit %s): %s, cover %d, lower %.1f, %.1f s", eta, size_limit,
                  outcome.model_status, len(bounds.cover), bounds.lower, outcome.seconds)
        return bounds

    def decide(self, eta: float, k: int) -> bool | None:
        """Is there a cover of size <= k at eta? True / False when proven, None when left open
        (a time limit, or a MILP too large to start)."""
        bounds = self.cheap(eta, packing_limit=k)
        if len(bounds.cover) <= k:
            return True
        if bounds.lower > k:
            return False
        if not self.exact:
            return None
        # The LP optimum never grows with eta: once it is <= k it cannot refute k at any larger eta.
        if eta < self.lp_refutes_below:
            bounds = self.lp(eta)
            if math.isfinite(bounds.lp) and bounds.lower <= k:
                self.lp_refutes_below = eta
        if len(bounds.cover) <= k:  # an integral LP optimum
            return True
        if bounds.lower > k:
            return False
        bounds = self.milp(eta, size_limit=k)
        if len(bounds.cover) <= k:
            return True
        if bounds.lower > k:
            return False
        return None

    def minimise(self, eta: float) -> _Bounds:
        """Best cover at eta: the MILP minimisation where greedy and the lower bounds disagree."""
        if not self.exact:
            return self.cheap(eta)
        self.lp(eta)
        return self.milp(eta, size_limit=None)

    def status(self, bounds: _Bounds) -> str:
        if not self.exact:
            return "greedy"
        proven = bounds.minimised or len(bounds.cover) <= bounds.lower + INTEGRALITY_TOL
        return "optimal" if proven else "time_limit"


def _check_solver(solver: str) -> bool:
    if solver not in ("exact", "greedy"):
        raise ValueError(f"solver={solver!r}; allowed: exact, greedy")
    return solver == "exact"


def _finish(search: _CoverSearch, dist: torch.Tensor, eta: float, bounds: _Bounds, status: str, *,
            eta_lower: float, undecided: int = 0, steps: int = 0, kcenter_radius: float = math.nan,
            extra_timings: dict[str, float] | None = None, started: float) -> CoveringResult:
    centres = np.sort(np.asarray(bounds.cover, dtype=np.int64))
    assignment, multiplicities, certificate = assign_to_centres(dist, centres)
    size = len(centres)
    lower = min(float(bounds.lower), float(size))
    timings = dict(search.timings)
    timings.update(extra_timings or {})
    timings["total_s"] = time.perf_counter() - started
    return CoveringResult(
        centres=centres, eta=float(eta), certificate=certificate, assignment=assignment,
        multiplicities=multiplicities, status=status, gap=(size - lower) / size if size else 0.0,
        lower_bound=lower, k_greedy=bounds.k_greedy, lp_bound=bounds.lp, eta_lower=float(eta_lower),
        undecided=undecided, steps=steps, kcenter_radius=kcenter_radius, timings=timings)


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def min_cover(dist: torch.Tensor, eta: float, *, solver: str = "exact", time_limit_s: float = 120.0,
              mip_rel_gap: float = 0.0, block: int = 4096) -> CoveringResult:
    """Fixed eta: the fewest centres covering every point within eta (exact: HiGHS MILP when bounds disagree)."""
    started = time.perf_counter()
    search = _CoverSearch(dist, exact=_check_solver(solver), time_limit_s=time_limit_s,
                          mip_rel_gap=mip_rel_gap, block=block)
    eta = float(eta)
    bounds = search.minimise(eta)
    return _finish(search, dist, eta, bounds, search.status(bounds), eta_lower=eta, started=started)


def min_radius_cover(dist: torch.Tensor, k: int, *, first: int = 0, solver: str = "exact",
                     time_limit_s: float = 120.0, mip_rel_gap: float = 0.0, max_steps: int = 64,
                     block: int = 4096) -> CoveringResult:
    """Fixed k: the smallest eta whose cover needs at most k centres, and the smallest cover at that eta.

    Bisection over the pairwise distances in greedy k-center's bracket [r_g / 2, r_g] (r_g itself is feasible
    with the k-center centres). Each step takes the median remaining candidate, so duplicates cost nothing
    and no sort of all distances is needed. A decision a time limit leaves open counts as "no" (eta stays an
    upper bound) and makes the status "time_limit". The returned cover may have fewer than k centres: the size
    minimisation at the final eta keeps the true minimum (the budget is an upper bound, nothing is padded).
    """
    started = time.perf_counter()
    exact = _check_solver(solver)
    n = dist.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k}; allowed: 1 <= k <= {n} (the number of points)")
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}; allowed: max_steps >= 1")
    search = _CoverSearch(dist, exact=exact, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap, block=block)

    begin = time.perf_counter()
    kcenter, radius = greedy_kcenter(dist, k, first)
    kcenter_s = time.perf_counter() - begin
    begin = time.perf_counter()
    # The optimal radius is a pairwise distance in [r_g / 2, r_g]; r_g is already known to be feasible.
    candidates = dist[(dist >= radius / 2) & (dist < radius)]
    candidates_s = time.perf_counter() - begin

    eta = radius
    proven_no = radius / 2  # every radius below r_g / 2 is infeasible (farthest-first is a 2-approximation)
    undecided = 0
    steps = 0
    while len(candidates) and steps < max_steps:
        mid = float(torch.kthvalue(candidates, (len(candidates) + 1) // 2).values)
        answer = search.decide(mid, k)
        steps += 1
        if answer:
            eta = mid
            candidates = candidates[candidates < mid]
        else:
            if answer is False:
                proven_no = max(proven_no, mid)
            elif exact:
                undecided += 1  # (greedy solver: "no" is greedy's answer, not a time-out)
            candidates = candidates[candidates > mid]
        log.debug("mcs: step %d eta=%.5g -> %s (%d candidates left)", steps, mid, answer, len(candidates))
    complete = len(candidates) == 0 and undecided == 0

    if eta == radius and eta not in search.cache:
        # No candidate below r_g was feasible: r_g's cover is k-center's, unless greedy set cover does better.
        bounds = search.cheap(eta)
        if len(kcenter) < len(bounds.cover):
            bounds.cover = np.sort(kcenter)
    bounds = search.minimise(eta)
    status = search.status(bounds)
    if exact and not complete:
        status = "time_limit"
    return _finish(search, dist, eta, bounds, status, eta_lower=proven_no, undecided=undecided, steps=steps,
                   kcenter_radius=radius, extra_timings={"kcenter_s": kcenter_s, "candidates_s": candidates_s},
                   started=started)
