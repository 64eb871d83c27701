"""HiGHS on a unit-cost set cover (LP relaxation or MILP), in a worker process that Ctrl-C ends at once.

Why a process: Highs.run() keeps its thread until HiGHS's own limits pass, and its presolve does not even look at
the time limit, so Ctrl-C or Slurm's SIGTERM once took about 6 minutes to end a run. HiGHS's interrupt callbacks
do not fix that: in a 1,000 x 1,000 set cover MILP they fired about twice a second and the solve stopped 7.8 s after
it was asked to. Here HiGHS runs in ``highs_worker.py`` (numpy and highspy only) while this process waits in short
slices: an exception raised while waiting (KeyboardInterrupt from Ctrl-C, or whatever a SIGTERM handler raises)
kills the worker and propagates at once, and a solve that overruns its time limit is killed the same way. The worker
also keeps HiGHS's banner, which it prints on stdout when its first object is made, off the run's output.
"""

from __future__ import annotations

import logging
import math
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sustainml_exp.families.mfc_coreset.selection import highs_worker

log = logging.getLogger("sustainml_exp")

# HiGHS reports continuous values; anything closer than this to 0 or 1 counts as that integer.
INTEGRALITY_TOL = 1e-6
# The waiting process wakes this often to let Python deliver a signal.
WAIT_SLICE_S = 0.1
# Beyond its time limit HiGHS gets this long to answer before the worker is killed (it checks the limit only now
# and then, and not at all in presolve).
LIMIT_GRACE_S = 2.0
# HiGHS's presolve does not look at the time limit: on a 6,000-point Fashion-MNIST class (13M nonzeros) it alone
# ran 50-80 s past a 20 s limit. LPs never use it (set cover LPs gain little from it); MILPs up to this many nonzeros.
MILP_PRESOLVE_MAX_NONZEROS = 2_000_000
WORKER = Path(highs_worker.__file__)


class HighsProcess:
    """One HiGHS worker process, started on the first solve and reused until ``close()`` (or the with-block ends)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> HighsProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            stream.close()

    def request(self, message: dict, *, deadline: float) -> dict | None:
        """Send one request and wait for its reply; None when no reply came by ``deadline`` (time.perf_counter())
        plus LIMIT_GRACE_S or the worker died (it is then killed and the next request starts a fresh one)."""
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            # -I: no user site or PYTHONPATH; the venv's own packages (and its .pth files) still load.
            self._proc = subprocess.Popen([sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE)
        proc = self._proc
        try:
            highs_worker.write_message(proc.stdin, message)
            while not select.select([proc.stdout], [], [], WAIT_SLICE_S)[0]:
                if proc.poll() is not None or time.perf_counter() > deadline + LIMIT_GRACE_S:
                    self.close()
                    return None
            reply = highs_worker.read_message(proc.stdout)
        except BrokenPipeError:
            self.close()
            return None
        except BaseException:
            self.close()  # Ctrl-C, SIGTERM handler, anything: the solve must not outlive this call
            raise
        if reply is None:
            self.close()
        return reply


@dataclass
class HighsOutcome:
    """One HiGHS run on a set cover. ``centres`` is a verified cover (None: HiGHS returned none)."""

    model_status: str  # HiGHS's own name, e.g. "kOptimal", "kTimeLimit", "kInfeasible"; "killed": no answer
    centres: np.ndarray | None
    objective: float  # LP: relaxation optimum (nan unless solved); MILP: size of centres (nan: none)
    dual_bound: float  # proven lower bound on the cover size (-inf: none)
    seconds: float

    @property
    def solved(self) -> bool:
        return self.model_status == "kOptimal"


def _is_cover(cover: sp.csc_matrix, centres: np.ndarray) -> bool:
    if len(centres) == 0:
        return cover.shape[0] == 0
    return bool(np.all(np.asarray(cover[:, centres].sum(1)).ravel() >= 1))


def solve_highs(cover: sp.csc_matrix, *, integer: bool, time_limit_s: float, mip_rel_gap: float = 0.0,
                size_limit: int | None = None, start: np.ndarray | None = None,
                process: HighsProcess | None = None) -> HighsOutcome:
    """Unit-cost set cover min 1's s.t. A s >= 1 with HiGHS: LP relaxation (0 <= s <= 1) or MILP (s binary).

    ``size_limit`` (MILP): decision mode, HiGHS stops at the first cover of at most that size ("kObjectiveTarget")
    or proves the optimum larger ("kOptimal" above the limit, or "kInfeasible"). ``start``: a known cover handed
    to the MILP as incumbent, so a time-out always has a cover to return. ``process``: a worker to reuse (default:
    one for this call). Never raises on a time-out: the outcome says what was reached."""
    n_rows, n_cols = cover.shape
    options: dict[str, object] = {"time_limit": float(time_limit_s)}
    if not integer or cover.nnz > MILP_PRESOLVE_MAX_NONZEROS:
        options["presolve"] = "off"
    if integer:
        options["mip_rel_gap"] = float(mip_rel_gap)
    if size_limit is not None:
        # Stop at the first cover within the limit (kObjectiveTarget) and prune nodes that cannot reach it.
        options["objective_target"] = size_limit + 0.5
        options["objective_bound"] = size_limit + 0.5
    useful_start = integer and start is not None and (size_limit is None or len(start) <= size_limit)
    message = {"shape": (n_rows, n_cols), "indptr": cover.indptr.astype(np.int32),
               "indices": cover.indices.astype(np.int32), "integer": integer, "options": options,
               "start": np.asarray(start, dtype=np.int64) if useful_start else None}
    begin = time.perf_counter()
    if process is None:
        with HighsProcess() as own:
            reply = own.request(message, deadline=begin + time_limit_s)
    else:
        reply = process.request(message, deadline=begin + time_limit_s)
    seconds = time.perf_counter() - begin
    if reply is None:
        log.info("HiGHS gave no answer within %.0f s of its %.1f s limit; its worker was stopped",
                 LIMIT_GRACE_S, time_limit_s)
        return HighsOutcome("killed", None, math.nan, -math.inf, seconds)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    status, values = reply["status"], reply["values"]
    if not integer:
        if status != "kOptimal":
            return HighsOutcome(status, None, math.nan, -math.inf, seconds)
        lp_value = reply["objective"]
        integral = bool(np.all((values < INTEGRALITY_TOL) | (values > 1 - INTEGRALITY_TOL)))
        centres = np.flatnonzero(values > 0.5) if integral else None
        if centres is not None and not _is_cover(cover, centres):
            centres = None
        return HighsOutcome(status, centres, lp_value, lp_value, seconds)
    centres = np.flatnonzero(values > 0.5) if values is not None else None
    if centres is not None and not _is_cover(cover, centres):
        log.warning("HiGHS returned a set cover solution that leaves points uncovered; ignoring it")
        centres = None
    dual = reply["mip_dual_bound"]
    if status == "kOptimal" and centres is not None and mip_rel_gap == 0:
        dual = max(dual, float(len(centres)))
    if status == "kInfeasible" and size_limit is not None:
        dual = max(dual, float(size_limit + 1))  # no cover within the limit exists
    if not math.isfinite(dual):
        dual = -math.inf
    objective = float(len(centres)) if centres is not None else math.nan
    return HighsOutcome(status, centres, objective, dual, seconds)
