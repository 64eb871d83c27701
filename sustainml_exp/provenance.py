"""What a record needs to be reproduced: code version, library versions, config hash, scheduler ids."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_TRACKED_DISTRIBUTIONS = (
    "sustainml-exp", "torch", "torch-geometric", "ogb", "triton", "numpy", "scipy", "pandas",
    "hydra-core", "omegaconf", "carbontracker",
)
_SOURCE_DIR = Path(__file__).resolve().parent.parent
# Set by sml-run in the submitting process; sbatch exports the environment, so a compute node without a git
# checkout (a wheel install, a copied venv) still records the code version the sweep was submitted from.
SUBMIT_SHA_ENV = "SML_SUBMIT_GIT_SHA"
SUBMIT_DIRTY_ENV = "SML_SUBMIT_GIT_DIRTY"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_SOURCE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _checkout_state() -> tuple[str, bool | None] | None:
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha, bool(status) if status is not None else None


def git_state() -> tuple[str, bool | None]:
    """(sha, dirty) of the checkout this package runs from, else the one recorded at submit time, else
    ('unknown', None)."""
    state = _checkout_state()
    if state is not None:
        return state
    sha = os.environ.get(SUBMIT_SHA_ENV)
    if not sha:
        return "unknown", None
    dirty = os.environ.get(SUBMIT_DIRTY_ENV, "")
    return sha, {"true": True, "false": False}.get(dirty)


def export_submit_git_state() -> None:
    """Put this checkout's (sha, dirty) in the environment that jobs submitted from this process inherit."""
    state = _checkout_state()
    if state is None:
        return
    sha, dirty = state
    os.environ[SUBMIT_SHA_ENV] = sha
    if dirty is not None:
        os.environ[SUBMIT_DIRTY_ENV] = "true" if dirty else "false"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TRACKED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def config_hash(config: dict[str, Any], exclude: tuple[str, ...]) -> str:
    """Stable hash of the resolved config without the keys that only say where things go (and the seed);
    ``exclude`` names keys below the top level dotted (condense.tm.buffer_dir)."""
    return hashlib.sha256(json.dumps(_without(config, exclude), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    kept = {}
    for name, value in config.items():
        if name in keys:
            continue
        below = tuple(key.split(".", 1)[1] for key in keys if key.startswith(f"{name}."))
        kept[name] = _without(value, below) if below and isinstance(value, dict) else value
    return kept


def slurm_ids() -> dict[str, str]:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
    return {"slurm_job_id": job, "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID", "")}
