"""Checks that a Slurm sweep can be submitted, run before anything is submitted.

Without them a missing plugin shows up as a Hydra stack trace, an unreachable controller as a submitit retry
loop, and an unknown partition as an sbatch error after the sweep directory is half set up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Name of conf/hydra/launcher/slurm.yaml in the hydra/launcher group.
SLURM_LAUNCHER = "slurm"
LOCAL_CLUSTER_HINT = "for a local test cluster: sudo bash scripts/local_slurm.sh start"
_TIMEOUT_S = 30


def submitit_plugin_problem() -> str | None:
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return ("hydra/launcher=slurm needs the hydra-submitit-launcher plugin, which is not installed; "
                "install it with: pip install hydra-submitit-launcher")
    return None


def _slurm_command(*args: str) -> tuple[int, str]:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 124, f"{args[0]} did not answer within {_TIMEOUT_S} s"
    except OSError as exc:
        return 127, str(exc)
    return out.returncode, (out.stdout + out.stderr).strip()


def cluster_partitions() -> list[str]:
    """Partition names known to slurmctld (the default one without sinfo's '*')."""
    code, text = _slurm_command("sinfo", "--noheader", "--format=%P")
    if code != 0:
        return []
    return sorted({line.strip().rstrip("*") for line in text.splitlines() if line.strip()})


def scheduler_problem(partition: str | None) -> str | None:
    """None when sbatch is usable, slurmctld answers and ``partition`` (None: the default) exists."""
    if shutil.which("sbatch") is None:
        return ("hydra/launcher=slurm: sbatch is not on PATH; run sml-run where Slurm is installed; "
                + LOCAL_CLUSTER_HINT)
    code, text = _slurm_command("scontrol", "ping")
    if code != 0 or "is UP" not in text:
        first = next((line for line in text.splitlines() if line.strip()), "no answer")
        return f"hydra/launcher=slurm: slurmctld is not reachable (scontrol ping: {first}); {LOCAL_CLUSTER_HINT}"
    if partition is not None:
        known = cluster_partitions()
        # sbatch takes a comma-separated list and runs the job on the first partition that can start it.
        unknown = [p for p in str(partition).split(",") if p not in known]
        if unknown:
            named = "" if unknown == [str(partition)] else f" names {', '.join(unknown)}, which"
            return (f"hydra.launcher.partition={partition!r}{named} is not a partition of this cluster; "
                    f"allowed: {', '.join(known) or '(sinfo lists none)'}")
    return None


def _array_queued(sweep_dir: Path) -> bool | None:
    """Whether a Slurm job of the sweep is still pending or running; None when that cannot be told (nothing
    submitted yet, or squeue failed). Job ids come from submitit's per-task folders (``.submitit/<job>_<task>``)."""
    job_ids = sorted({p.name.split("_")[0] for p in (Path(sweep_dir) / ".submitit").glob("*_*") if p.is_dir()})
    if not job_ids:
        return None
    code, text = _slurm_command("squeue", "--noheader", "--format=%i", f"--jobs={','.join(job_ids)}")
    if code != 0:
        # squeue refuses ids slurmctld no longer knows (MinJobAge after their end): none is queued then.
        return False if "Invalid job id" in text else None
    return bool(text.strip())


def wait_for_array(sweep_dir: Path, poll_s: float = 10.0) -> None:
    """Wait until no Slurm job of the sweep is pending or running (submitit may stop waiting at the first task that
    ended without a result while others still run)."""
    while _array_queued(sweep_dir):
        time.sleep(poll_s)


class ArrayEnded(BaseException):
    """Raised in the main thread when no task of the sweep is queued any more while the launcher still waits.

    A BaseException, so that Hydra's job machinery lets it through like an interrupt."""


def _raise_array_ended(signum: int, frame: Any) -> None:
    raise ArrayEnded()


@contextlib.contextmanager
def stop_waiting_when_array_ends(sweep_dir: Path, poll_s: float = 10.0) -> Iterator[None]:
    """Watch squeue while the block runs; once the sweep's jobs have left the queue for two polls in a row, raise
    ArrayEnded in the main thread.

    Without Slurm accounting (no sacct), submitit learns that a task ended only from its result file, so a task
    that was cancelled or killed (out of memory, node failure) would keep sml-run waiting forever. The records say
    what each task did, so the sweep's summary needs nothing more from the launcher."""
    stop = threading.Event()

    def watch() -> None:
        gone = 0
        while not stop.wait(poll_s):
            gone = gone + 1 if _array_queued(sweep_dir) is False else 0
            if gone == 2:
                # A real signal to the main thread, so that a sleep in the launcher's wait ends at once.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                return

    previous = signal.signal(signal.SIGUSR1, _raise_array_ended)
    watcher = threading.Thread(target=watch, name="sml-slurm-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        try:
            watcher.join()
        finally:
            signal.signal(signal.SIGUSR1, previous)
