"""HiGHS worker process: solves set cover models sent by ``highs.HighsProcess`` over its stdin / stdout.

Run as a script (``python highs_worker.py``), so that it imports numpy and highspy only, never this package (and
torch). Messages are 8-byte little-endian lengths followed by pickles: a request dict in, a reply dict out, until
stdin closes. The protocol uses a private copy of descriptor 1; descriptor 1 itself points at /dev/null, so the
banner HiGHS prints on stdout when its first object is made goes nowhere. SIGINT is ignored: the parent decides when
a solve ends (it kills this process), and a terminal's Ctrl-C reaches the whole process group.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback

HEADER = struct.Struct("<Q")


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (even by SIGKILL), so no solve outlives the run."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def read_message(stream):
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


def write_message(stream, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def solve(request: dict) -> dict:
    import highspy
    import numpy as np

    n_rows, n_cols = request["shape"]
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    for name, value in request["options"].items():
        highs.setOptionValue(name, value)
    integrality = np.full(n_cols, 1 if request["integer"] else 0, dtype=np.int32)
    indices = np.asarray(request["indices"], dtype=np.int32)
    passed = highs.passModel(n_cols, n_rows, len(indices), int(highspy.MatrixFormat.kColwise),
                             int(highspy.ObjSense.kMinimize), 0.0, np.ones(n_cols), np.zeros(n_cols),
                             np.ones(n_cols), np.ones(n_rows), np.full(n_rows, highspy.kHighsInf),
                             np.asarray(request["indptr"], dtype=np.int32), indices, np.ones(len(indices)),
                             integrality)
    if passed != highspy.HighsStatus.kOk:
        return {"error": f"HiGHS rejected the {n_rows} x {n_cols} set cover model ({passed.name})"}
    if request.get("start") is not None:
        solution = highspy.HighsSolution()
        values = np.zeros(n_cols)
        values[np.asarray(request["start"], dtype=np.int64)] = 1.0
        solution.col_value = values.tolist()
        highs.setSolution(solution)
    highs.run()
    info = highs.getInfo()
    has_solution = int(info.primal_solution_status) == 2  # kSolutionStatusFeasible
    return {
        "status": highs.getModelStatus().name,
        "values": np.asarray(highs.getSolution().col_value, dtype=np.float64) if has_solution else None,
        "objective": float(info.objective_function_value),
        "mip_dual_bound": float(info.mip_dual_bound),
    }


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    requests = sys.stdin.buffer
    while True:
        request = read_message(requests)
        if request is None:
            return
        try:
            reply = solve(request)
        except Exception:  # noqa: BLE001 - the parent reports it
            reply = {"error": traceback.format_exc(limit=5)}
        write_message(replies, reply)


if __name__ == "__main__":
    main()
