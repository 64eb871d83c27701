"""How fast SIGINT / SIGTERM end a run: sml-run on each family's embedded default, the signal sent after a few
delays (so it lands in data loading, selection, training or evaluation), exit status and seconds to exit.

A run must end within seconds whatever it is doing (the runner's contract for families: no native call may block
a signal for long). Prints one Markdown table; a case that does not end within --limit seconds is killed and
reported as such, and the script then exits 1.

    python scripts/interrupt_latency.py                       # every case, SIGINT, delays 8 and 20 s
    python scripts/interrupt_latency.py --cases gnn csl --signal SIGTERM --delays 5
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SML_RUN = Path(sys.executable).with_name("sml-run")
CASES = {
    "gnn": ["epochs=100000"],
    "csl": ["experiment=csl_segmentation", "epochs=100000"],
    **{f"mfc-{method}": ["experiment=mfc_coreset", f"method={method}"]
       for method in ("rand", "kcenter", "herding", "craig", "gradmatch", "submod", "dm", "gm", "tm", "mcs")},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM"])
    parser.add_argument("--delays", type=float, nargs="+", default=[8.0, 20.0], help="seconds after the start")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds a run may take to end")
    return parser


def measure(args: list[str], signum: signal.Signals, delay: float, limit: float, work: Path) -> tuple[str, str]:
    """(exit status, seconds from the signal to the exit) of one interrupted run."""
    proc = subprocess.Popen([str(SML_RUN), *args, "energy=none", "progress=off", "threads=1", "rerun=true",
                             f"results_dir={work / 'results'}", f"data_dir={work / 'data'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return f"{proc.returncode} (ended before the signal)", "-"
    except subprocess.TimeoutExpired:
        pass
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "killed", f"> {limit:g}"
    return str(proc.returncode), f"{time.monotonic() - sent:.2f}"


def main() -> None:
    args = _parser().parse_args()
    signum = signal.Signals[args.signal]
    print("| case | delay (s) | signal | exit status | s to exit |\n|---|---|---|---|---|")
    hung = False
    with tempfile.TemporaryDirectory() as work:
        for case in args.cases:
            for delay in args.delays:
                status, seconds = measure(CASES[case], signum, delay, args.limit, Path(work))
                hung |= status == "killed"
                print(f"| {case} | {delay:g} | {signum.name} | {status} | {seconds} |", flush=True)
    sys.exit(1 if hung else 0)


if __name__ == "__main__":
    main()
