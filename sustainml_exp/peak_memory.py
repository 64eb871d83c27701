"""Peak memory of a code region: the CUDA allocator's peak, or on CPU the process's resident high-water mark.

On CPU the high-water mark (VmHWM) is reset at the start of the region through ``/proc/self/clear_refs``, so
runs of a multirun sharing one process each get their own figure; where the reset is refused (not Linux, or a
locked-down /proc) the figure is the max RSS since process start and its source says so.

``PhasePeaks`` splits a region into consecutive phases (e.g. forward, backward, optimizer step) and records, for
each, the peak and the memory still held at its end, both above the region's start: what is alive when.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
        self.reset_peak()
        self.baseline_mb = self.current_mb()

    def reset_peak(self) -> None:
        """Restart the peak from what is held now, keeping the baseline."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.source = "cuda:max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            self.source = "cpu:rss_high_water_mark"
        except OSError:
            self.source = "cpu:max_rss_since_process_start"

    def current_mb(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated() / MIB
        return _rss_mb()

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


@dataclass
class PhaseMemory:
    peak_mb: float  # most held during the phase, above the region's start
    end_mb: float  # held when the phase ended, above the region's start


@dataclass
class PhasePeaks:
    """``start()`` the region, then wrap each phase in ``phase(name)``; ``phases[name]`` is its PhaseMemory."""

    device: str
    phases: dict[str, PhaseMemory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter = PeakMemory(self.device)

    def start(self) -> None:
        self.phases.clear()
        self.meter.reset()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.meter.reset_peak()
        yield
        self.phases[name] = PhaseMemory(peak_mb=self.meter.peak_mb() - self.meter.baseline_mb,
                                        end_mb=self.meter.current_mb() - self.meter.baseline_mb)


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Kineto (the profiler's C++ side) prints a start and a stop line to the process's stderr on every profile; a
    measurement inside a run must not add lines to its output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_live_bytes(fn: Callable[[], object], device: str) -> int:
    """Most bytes torch's allocator held during ``fn()`` above what it held before: CUDA's allocator peak, or on
    CPU torch.profiler's memory events (exact, unlike the resident set, which depends on how malloc reuses pages)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak
