"""Subprocess helpers for the CLI tests (a plain module: ``conftest`` names clash across test folders)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SML_RUN = Path(sys.executable).with_name("sml-run")
SML_TABLES = Path(sys.executable).with_name("sml-tables")


def run_cli(exe: Path, *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None,
            umask: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUTDATED_IGNORE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))
