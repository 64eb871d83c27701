"""scripts/check_kernels_cuda.py, the GPU check of the kernels, runs clean in Triton's interpreter on its small cases.

The script is meant for a machine with CUDA; running its small cases here keeps its case lists, comparisons and
summary working between GPU runs (the kernels' own tests are test_quant_triton.py and test_rp_triton.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_kernels_cuda.py"


def test_check_kernels_script_passes_on_cpu_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small"], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    summary = re.fullmatch(r"(\d+) checks, (\d+) failed", lines[-1])
    assert summary, lines[-1]
    checks = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    assert int(summary[1]) == len(checks) > 100 and int(summary[2]) == 0
    # every kernel family shows up, so a case list that silently became empty fails here
    for kernel in ("quantize_pack", "unpack_dequantize", "project_rademacher", "project_quantize_pack", "pack_mask",
                   "unpack_mask", "relu_pack", "dropout_pack", "dropout_apply", "masked_scale"):
        assert any(line.split()[1] == kernel for line in checks), kernel
