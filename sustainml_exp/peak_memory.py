"""Peak memory of a code region: the CUDA allocator's peak, or on CPU the process's resident high-water mark.

On CPU the high-water mark (VmHWM) is reset at the start of the region through ``/proc/self/clear_refs``, so
runs of a multirun sharing one process each get their own figure; where the reset is refused (not Linux, or a
locked-down /proc) the figure is the max RSS since process start and its source says so.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import torch

MIB = 2**20
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


@dataclass
class PeakMemory:
    """``reset()`` at the start of the region; ``peak_mb()`` is the peak since, ``peak_above_baseline_mb()``
    the part of it not already held at the reset (data, model, libraries)."""

    device: str
    baseline_mb: float = float("nan")
    source: str = ""

    def reset(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_mb = torch.cuda.memory_allocated() / MIB
            self.source = "cuda:max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            self.source = "cpu:rss_high_water_mark"
        except OSError:
            self.source = "cpu:max_rss_since_process_start"
        self.baseline_mb = _rss_mb()

    def peak_mb(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / MIB
        if self.source == "cpu:rss_high_water_mark":
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                return hwm / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    def peak_above_baseline_mb(self) -> float:
        return self.peak_mb() - self.baseline_mb
