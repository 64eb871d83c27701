"""Will a run fit? Compare its estimated peak with what the device offers, before anything large is allocated.

A run that the OS's OOM killer ends loses its record and can take a shared machine down with it; a run refused
here records status ``oom`` with its estimate and says in one line what it needs, what there is, and (where the
family knows one) a configuration that would fit. Imports nothing heavy: the schema reads ``MEMORY_CHECKS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sustainml_exp.errors import UserError

log = logging.getLogger("sustainml_exp")

# error: refuse a run whose estimate exceeds the budget; warn: log it and run anyway; off: do not compare.
MEMORY_CHECKS = ("error", "warn", "off")
MIB = 2**20
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


class MemoryPreflightError(UserError):
    """The run's estimated peak exceeds its memory budget; recorded as status oom with the estimate."""

    def __init__(self, message: str, est_peak_mb: float) -> None:
        super().__init__(message)
        self.record_fields = {"est_peak_mb": est_peak_mb}


def gib(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB"


def _meminfo_mb(field: str) -> float | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cgroup_headroom_mb() -> float | None:
    """Memory left under this process's cgroup (v2) limit, None without a limit."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return (int(limit) - int((_CGROUP / "memory.current").read_text())) / MIB
    except (OSError, ValueError):
        return None


def device_offers_mb(device: str, held_mb: float) -> float:
    """What a run on ``device`` can reach at most: on CPU the system's available RAM (and the cgroup's headroom)
    plus ``held_mb`` (what this process already holds, part of its estimate); on CUDA the free device memory plus
    ``held_mb`` (what torch's allocator holds)."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free / MIB + held_mb
    candidates = [m for m in (_meminfo_mb("MemAvailable"), _cgroup_headroom_mb()) if m is not None]
    if not candidates:
        return float("inf")
    return min(candidates) + held_mb


def check_fits(est_peak_mb: float, mode: str, budget_mb: float,
               alternative: Callable[[], str] | None = None) -> None:
    """Raise MemoryPreflightError (mode error) or warn (mode warn) when the estimate exceeds the budget.

    ``alternative()``, called only for a refusal: what a configuration that would use less needs, e.g.
    'quant=block G_R=64 needs ~9.8 GiB' ('' for none)."""
    if mode == "off" or est_peak_mb <= budget_mb:
        return
    message = f"needs ~{gib(est_peak_mb)}, {gib(budget_mb)} available"
    if mode == "warn":
        log.warning("memory_check=warn: %s; running anyway", message)
        return
    hint = alternative() if alternative is not None else ""
    raise MemoryPreflightError(message + (f"; {hint}" if hint else ""), est_peak_mb)
