"""Checks that a Slurm sweep can be submitted, run before anything is submitted.

Without them a missing plugin shows up as a Hydra stack trace, an unreachable controller as a submitit retry
loop, and an unknown partition as an sbatch error after the sweep directory is half set up.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

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


def wait_for_array(sweep_dir: Path, poll_s: float = 10.0) -> None:
    """Wait until no Slurm job of the sweep is pending or running.

    Hydra's submitit launcher stops waiting at the first task that ended without a result (cancelled, killed by
    the node); the summary of the sweep must still see every other task's record. Job ids come from submitit's
    per-task folders (``<sweep_dir>/.submitit/<job>_<task>``)."""
    job_ids = sorted({p.name.split("_")[0] for p in (Path(sweep_dir) / ".submitit").glob("*_*") if p.is_dir()})
    while job_ids:
        code, text = _slurm_command("squeue", "--noheader", "--format=%i", f"--jobs={','.join(job_ids)}")
        if code != 0 or not text.strip():
            return
        time.sleep(poll_s)
