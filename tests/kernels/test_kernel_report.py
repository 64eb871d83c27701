"""scripts/kernel_report.py: its SASS parsing, a compile of a few kernels for sm_90 without a GPU, and Triton's own
launch-time specialisation of the keyed kernels (one compiled variant whatever the seed).

The compile runs in a subprocess: the report must import triton without TRITON_INTERPRET, which tests/conftest.py
sets for this process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import kernel_report  # noqa: E402

SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0020*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0030*/               @P0 STL [R1], R2 ;
        /*0040*/                   FMNMX R3, R2, R3, PT ;
        /*0050*/                   NOP;
        /*0060*/              @!P1 BRA `(.L_x_0) ;
        /*0070*/                   LDL R2, [R1] ;
        /*0080*/                   EXIT ;
.L_x_1:
        /*0090*/                   BRA `(.L_x_1);
        /*00a0*/                   NOP;
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_sass_analysis_counts_instructions_loops_and_spills() -> None:
    stats = kernel_report.analyse_sass(SASS)
    # 9 instructions: NOPs and the trap `BRA self` after EXIT do not count; the loop body is 0x20..0x60 (4).
    assert stats.instructions == 8
    assert stats.loop_bodies == [4]
    assert stats.spill_instructions == 2  # STL, LDL
    assert stats.per_thread(trips=10) == 8 - 4 + 10 * 4


def test_nested_loops_are_refused() -> None:
    nested = SASS.replace("        /*0070*/                   LDL R2, [R1] ;",
                          "        /*0070*/                   BRA `(.L_x_0) ;")
    with pytest.raises(ValueError, match="nested or overlapping loops"):
        kernel_report.analyse_sass(nested)


def test_report_compiles_a_subset_for_sm90_offline() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "kernel_report.py"), "--subset", "--arch", "90"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| sm_90 |")]
    kernels = {row[4].strip() for row in rows if len(row) > 10}
    assert {"_quantize_aligned_kernel", "_project_quantize_kernel"} <= kernels
    for row in rows:
        if len(row) > 10:
            regs, spills, sass, per_element = (float(row[i]) for i in (5, 6, 7, 8))
            assert 0 < regs <= 255 and spills == 0 and sass > 50 and per_element >= 0
    assert re.search(r"configurations compiled in \d+ s", proc.stdout)
    bad = subprocess.run([sys.executable, str(SCRIPTS / "kernel_report.py"), "--arch", "75"], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "allowed: comma-separated 90, 80" in bad.stderr


def test_keyed_kernels_specialise_alike_for_every_seed() -> None:
    """Keys >= 2^31 would be typed i64 and keys < 2^31 i32 if passed as they are: two compiled variants, the second
    compiling inside a timed epoch. Seeds 0 (both keys >= 2^31) and 1 (both below) must give one specialisation."""
    program = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(SCRIPTS)!r})
        import kernel_report
        from triton.runtime import driver
        driver.set_active(kernel_report._CompileOnlyDriver(90))
        qt, rp = kernel_report._kernel_modules()
        x = torch.empty(64, 40)
        calls = [lambda s: qt.quantize_pack_triton(x, 2, 64, s), lambda s: qt.quantize_pack_triton(x, 2, 7, s),
                 lambda s: qt.dropout_pack_triton(x, 0.5, s),
                 lambda s: rp.project_quantize_pack_triton(x, 16, s, 2, 64, s),
                 lambda s: rp.project_quantize_pack_triton(x, 16, s, 2, 64, s, exact=False)]
        for call in calls:
            specs = []
            for seed in (0, 1, 2**63 + 5):
                with kernel_report.Capture() as capture:
                    call(seed)
                specs.append([launch.specialization for launch in capture.launches])
            assert specs[0] and specs[0] == specs[1] == specs[2], call
        print("one variant")
    """)
    proc = subprocess.run([sys.executable, "-c", program], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "one variant" in proc.stdout, proc.stderr[-3000:]
