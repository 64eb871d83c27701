"""Shared fixtures: every test that runs sml-run gets its own results folder and no energy hardware."""

from __future__ import annotations

import os

# Kernel tests run Triton's CPU interpreter; it must be chosen before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cli_helpers import SML_RUN, run_cli  # noqa: E402


@pytest.fixture
def sml_run(tmp_path: Path):
    """Run ``sml-run`` in a subprocess with results under tmp_path/results; returns (process, results_dir)."""
    results = tmp_path / "results"

    def _run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_cli(SML_RUN, *args, f"results_dir={results}", f"data_dir={tmp_path / 'data'}",
                       cwd=tmp_path, timeout=timeout, env=env)

    _run.results_dir = results  # type: ignore[attr-defined]
    return _run


@pytest.fixture
def one_thread():
    # Tiny shapes gain nothing from threads, and on a shared CPU OpenMP's waiting threads slow them many-fold.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
