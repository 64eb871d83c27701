"""Energy measurement of a run (carbontracker or none). Light to import: carbontracker loads on ``start()``."""

from sustainml_exp.energy.meter import (
    EnergyConfig,
    EnergyMeter,
    EnergyReport,
    NullEnergyMeter,
    make_energy_meter,
)

__all__ = ["EnergyConfig", "EnergyMeter", "EnergyReport", "NullEnergyMeter", "make_energy_meter"]
