"""Shared fixtures: every test that runs sml-run gets its own results folder and no energy hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SML_RUN = Path(sys.executable).with_name("sml-run")
SML_TABLES = Path(sys.executable).with_name("sml-tables")


def run_cli(exe: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUTDATED_IGNORE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sml_run(tmp_path: Path):
    """Run ``sml-run`` in a subprocess with results under tmp_path/results; returns (process, results_dir)."""
    results = tmp_path / "results"

    def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_cli(SML_RUN, *args, f"results_dir={results}", f"data_dir={tmp_path / 'data'}",
                       cwd=tmp_path, timeout=timeout)

    _run.results_dir = results  # type: ignore[attr-defined]
    return _run
