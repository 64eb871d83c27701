"""PeakMemory on CPU: the resident high-water mark sees a region's allocations and starts afresh at reset."""

from __future__ import annotations

import pytest
import torch

from sustainml_exp.peak_memory import PeakMemory, PhasePeaks


def _touch_mb(mb: int) -> torch.Tensor:
    return torch.ones(mb * 2**20 // 4, dtype=torch.float32)  # ones() writes every page, so it is resident


def test_peak_sees_a_region_allocation() -> None:
    meter = PeakMemory("cpu")
    meter.reset()
    block = _touch_mb(256)
    assert meter.peak_above_baseline_mb() >= 240
    del block


def test_reset_forgets_the_previous_region() -> None:
    meter = PeakMemory("cpu")
    meter.reset()
    block = _touch_mb(256)
    first_peak = meter.peak_mb()
    del block
    meter.reset()
    if meter.source != "cpu:rss_high_water_mark":
        pytest.skip(f"this kernel refuses the high-water-mark reset ({meter.source})")
    assert meter.peak_mb() < first_peak - 200


def test_phases_record_their_peak_and_what_they_leave_held() -> None:
    meter = PhasePeaks("cpu")
    meter.start()
    if meter.meter.source != "cpu:rss_high_water_mark":
        pytest.skip(f"this kernel refuses the high-water-mark reset ({meter.meter.source})")
    with meter.phase("allocate"):
        kept = _touch_mb(128)
        transient = _touch_mb(128)
        del transient
    with meter.phase("free"):
        del kept
    allocate, free = meter.phases["allocate"], meter.phases["free"]
    assert allocate.peak_mb >= 240 and 100 <= allocate.end_mb <= allocate.peak_mb - 100
    assert free.peak_mb == pytest.approx(allocate.end_mb, abs=20) and free.end_mb < 30
