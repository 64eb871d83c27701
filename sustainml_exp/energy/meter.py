"""The meter interface a run drives (start, epoch_start/epoch_end around the measured work, stop) and the
backends behind it: ``carbontracker`` (ct_meter.py) or ``none``.

Every meter must survive compute nodes without internet and without RAPL permission: it never hangs, never raises
into training (failures become ``energy_kwh = NaN`` plus a warning logged once), never reports a silent 0, and never
touches the network. ``co2_g = energy_kwh * EnergyConfig.carbon_intensity_g_per_kwh``.

Source strings (``cpu_power_source``, ``gpu_power_source``)
    ``rapl``, ``apple_powermetrics``, ``nvml``: hardware counters.
    ``simulated_tdp:65W``: constant 0.5 x 65 W from ``cpu_tdp_w``; ``simulated_tdp:120W(ct_table)``: TDP from
    carbontracker's CPU table matched on the model name; ``...(ct_table_mean)``: no match, table mean.
    ``unavailable:<reason>``: not measured (``no-gpu`` = the run's device is not a GPU); ``none`` for
    ``backend=none``. When energy_kwh is NaN at least one source says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sustainml_exp.energy.config import ENERGY_BACKENDS, EnergyConfig

NAN = float("nan")


@dataclass(frozen=True)
class EnergyReport:
    """What a run records about energy. energy_kwh is NaN, never 0, when nothing was measured."""

    energy_kwh: float
    co2_g: float
    energy_backend: str
    cpu_power_source: str
    gpu_power_source: str


@runtime_checkable
class EnergyMeter(Protocol):
    def start(self) -> None: ...

    def epoch_start(self) -> None: ...

    def epoch_end(self) -> None: ...

    def stop(self) -> EnergyReport: ...


def make_energy_meter(cfg: EnergyConfig, log_dir: Path, device: str) -> EnergyMeter:
    """Meter for ``cfg.backend``; ``device`` is the run's resolved device (cpu | cuda[:i]).

    Building the meter is cheap and does not touch carbontracker; ``start()`` does.
    """
    backend = str(cfg.backend).strip().lower()
    if backend == "none":
        return NullEnergyMeter()
    if backend == "carbontracker":
        from sustainml_exp.energy.ct_meter import CarbonTrackerMeter

        return CarbonTrackerMeter(cfg, Path(log_dir), str(device))
    raise ValueError(f"energy.backend={cfg.backend!r} is not allowed; allowed: {', '.join(ENERGY_BACKENDS)}")


class NullEnergyMeter:
    """``energy=none``: measures nothing."""

    def start(self) -> None:
        pass

    def epoch_start(self) -> None:
        pass

    def epoch_end(self) -> None:
        pass

    def stop(self) -> EnergyReport:
        return EnergyReport(NAN, NAN, "none", "none", "none")
