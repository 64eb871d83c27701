"""Which power counters can really be read here: carbontracker's own checks are too optimistic.

What carbontracker 2.4.7 does, read from its source
CPU
    Handlers are tried in order: ``IntelCPU`` (RAPL energy counters in /sys/class/powercap; "available" only
    means that folder is non-empty, and a PermissionError at read time is recorded as 0 W, i.e. a silent zero),
    ``AppleSiliconCPU`` (``sudo powermetrics``, which may prompt for a password and block), ``GenericCPU`` (no
    counter: the TDP of the CPU model looked up by name in carbontracker's bundled ``cpu_power.csv``, else the
    table mean, times 50 % utilisation). ``sim_cpu``/``sim_cpu_tdp``/``sim_cpu_util`` replace all of these by a
    ``SimulatedCPUHandler``: constant ``tdp * util`` watts (util defaults to 0.5).
    We probe RAPL readability ourselves (same domains carbontracker picks: package and dram) and on macOS
    ``sudo -n powermetrics``. If no counter is readable the meter forces the simulated handler with ``cpu_tdp_w``
    or, when that is None, with the TDP carbontracker's GenericCPU would use (its table lookup), at 50 %.
GPU
    ``NvidiaGPU`` via pynvml (``nvmlDeviceGetPowerUsage``, all GPUs or the ``CUDA_VISIBLE_DEVICES`` indices); an
    unreadable power value is again recorded as 0 W. We probe NVML with carbontracker's own handler and include
    the GPU component only if a power value can be read. The config has no GPU wattage, so an unreadable GPU is
    reported as ``unavailable:<reason>`` (carbontracker's ``sim_gpu`` needs a wattage) and only the CPU is
    counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import statistics
import subprocess
import threading
from collections.abc import Callable
from typing import Optional

log = logging.getLogger("sustainml_exp.energy")

# carbontracker's SimulatedCPUHandler default and GenericCPU's assumption: the CPU draws half its TDP.
SIM_CPU_UTIL = 0.5
_RAPL_DIR = "/sys/class/powercap"


def probe_rapl(rapl_dir: str = _RAPL_DIR) -> tuple[bool, str]:
    """(readable, reason): can every RAPL domain carbontracker would use (package, dram) be read?"""
    try:
        entries = sorted(os.listdir(rapl_dir))
    except FileNotFoundError:
        return False, "no-rapl"
    except OSError as exc:
        return False, f"rapl-{slug(type(exc).__name__)}"
    pattern = re.compile(r"intel-rapl:(\d)(:\d)?")  # the domains carbontracker's IntelCPU.init selects
    domains = []
    for entry in entries:
        if ":" not in entry or not pattern.fullmatch(entry):
            continue
        try:
            with open(os.path.join(rapl_dir, entry, "name")) as f:
                name = f.read().strip()
        except PermissionError:
            return False, "rapl-permission"
        except OSError:
            return False, "rapl-unreadable"
        if name != "psys" and ("package" in name or "dram" in name):
            domains.append(entry)
    if not domains:
        return False, "no-rapl-domains"
    for entry in domains:
        try:
            with open(os.path.join(rapl_dir, entry, "energy_uj")) as f:
                int(f.read())
        except PermissionError:
            return False, "rapl-permission"
        except (OSError, ValueError):
            return False, "rapl-unreadable"
    return True, "rapl"


def probe_powermetrics(timeout_s: float) -> tuple[bool, str]:
    """macOS: does ``sudo powermetrics`` run without a password prompt (carbontracker calls it without -n)?"""
    if platform.system() != "Darwin":
        return False, "no-powermetrics"
    cmd = ["sudo", "-n", "powermetrics", "-n", "1", "-i", "100", "--samplers", "cpu_power"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=max(0.5, timeout_s / 2), check=False)
    except (OSError, subprocess.SubprocessError):
        return False, "powermetrics-unavailable"
    return (True, "apple_powermetrics") if proc.returncode == 0 else (False, "powermetrics-needs-sudo")


_TABLE_TDP_LOCK = threading.Lock()
_TABLE_TDP: Optional[tuple[str, Optional[float], str]] = None


def ct_table_tdp() -> tuple[str, Optional[float], str]:
    """(cpu name, TDP W or None, origin) as carbontracker's GenericCPU would pick them; cached per process.

    GenericCPU runs py-cpuinfo (a ~1 s subprocess) and logs to stdout through a module-level logger, which we
    replace by a silent one while it runs.
    """
    global _TABLE_TDP
    with _TABLE_TDP_LOCK:
        if _TABLE_TDP is not None:
            return _TABLE_TDP
        from unittest import mock

        from carbontracker.components.cpu import generic

        with mock.patch.object(generic, "logger", _SilentCtLogger()):
            cpu = generic.GenericCPU(pids=[], devices_by_pid=False)
            brand = str(cpu.cpu_brand or "").strip()
            # An empty name would substring-match the first table row; treat it as "no match".
            tdp = cpu.find_matching_tdp() if brand else None
        origin = "ct_table"
        if tdp is None and cpu.cpu_power_data:
            tdp, origin = statistics.mean(cpu.cpu_power_data.values()), "ct_table_mean"
        _TABLE_TDP = (brand or "Unknown CPU", None if tdp is None else round(float(tdp), 1), origin)
        return _TABLE_TDP


class _SilentCtLogger:
    """Stands in for carbontracker's module-level console Logger in components/cpu/generic.py."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda msg, *a, **k: log.debug("carbontracker generic CPU: %s", msg)


def probe_nvml() -> tuple[bool, str]:
    """Can carbontracker's NvidiaGPU handler read a power value from every GPU it would measure?"""
    try:
        from carbontracker.components.gpu.nvidia import NvidiaGPU
    except Exception as exc:  # noqa: BLE001 - pynvml missing or broken
        return False, f"no-nvml({slug(type(exc).__name__)})"
    gpu = NvidiaGPU(pids=[], devices_by_pid=False)
    try:
        gpu.init()
    except Exception as exc:  # noqa: BLE001
        return False, f"nvml-init({slug(type(exc).__name__)})"
    try:
        if not gpu._handles:  # noqa: SLF001 - what carbontracker itself checks in available()
            return False, "no-nvml-devices"
        gpu.power_usage()
    except Exception as exc:  # noqa: BLE001
        return False, f"nvml-power({slug(type(exc).__name__)})"
    finally:
        with contextlib.suppress(Exception):
            gpu.shutdown()
    return True, "nvml"


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-")[:limit] or "error"
