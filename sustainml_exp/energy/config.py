"""Energy settings of a run: the typed ``energy`` group of every run config (conf/energy/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sustainml_exp.config.checks import check_choice, check_range

ENERGY_BACKENDS = ("carbontracker", "none")


@dataclass
class EnergyConfig:
    backend: str = "carbontracker"
    # gCO2eq/kWh used to turn measured energy into co2_g; never fetched from the network. Set it to your grid's
    # figure: the default is the EU-27 2023 average (EEA), a placeholder rather than a claim about where a run
    # happens.
    carbon_intensity_g_per_kwh: float = 244.0
    # CPU TDP (W) for carbontracker's simulated-CPU mode, used only when no power counter (RAPL, powermetrics) is
    # readable; the CPU is then assumed to draw probes.SIM_CPU_UTIL (50 %) of it. null: the TDP carbontracker's
    # GenericCPU looks up for this CPU model in its bundled table (table mean if no match), also at 50 %.
    cpu_tdp_w: Optional[float] = None
    # Upper bound (s) on any meter call that could block (start, epoch_start, epoch_end, stop).
    timeout_s: float = 10.0

    def validate(self) -> None:
        check_choice("energy.backend", self.backend, ENERGY_BACKENDS)
        check_range("energy.carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh, lo=0.0)
        if self.cpu_tdp_w is not None:
            check_range("energy.cpu_tdp_w", self.cpu_tdp_w, lo=0.0, lo_open=True)
        check_range("energy.timeout_s", self.timeout_s, lo=0.0, lo_open=True)
