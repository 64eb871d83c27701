"""Energy measurement of a run (carbontracker or none). Light to import: carbontracker loads on ``start()``.

config.py: the settings; meter.py: the interface and backend choice; ct_meter.py: driving carbontracker (bounded
calls, offline, quiet); probes.py: which power counters are really readable; ct_logs.py: reading its totals.
"""

from sustainml_exp.energy.config import ENERGY_BACKENDS, EnergyConfig
from sustainml_exp.energy.meter import EnergyMeter, EnergyReport, NullEnergyMeter, make_energy_meter

__all__ = ["ENERGY_BACKENDS", "EnergyConfig", "EnergyMeter", "EnergyReport", "NullEnergyMeter", "make_energy_meter"]
