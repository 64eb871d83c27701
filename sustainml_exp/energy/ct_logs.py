"""Reading a run's energy back from carbontracker's own log files.

``CarbonTracker.stop()`` writes "Actual consumption ... Energy: X kWh" to the output log; we read it with
``carbontracker.parser.get_consumption`` (its regex only matches when the "This is equivalent to" block follows,
hence the meter's ``interpretable=True``; a one-line regex on the same text is the fallback) and the per-epoch
average power per component with ``carbontracker.parser.get_avg_power_usages``, to catch a component that never got
a sample. The total is carbontracker's figure: energy of the measured components inside epoch_start..epoch_end
windows, **multiplied by its PUE coefficient 1.58** (``carbontracker.constants.PUE_2023``). (Its log says "for N-1
epoch(s)" because ``stop()`` assumes the last epoch was interrupted; the energy covers all completed epochs.)
"""

from __future__ import annotations

import re
from typing import Optional

# The total as CarbonTracker._output_energy writes it (fallback when parser.get_consumption finds nothing).
ENERGY_LINE = re.compile(r"Actual consumption[^\n]*\n\s*Time:[^\n]*\n\s*Energy:\s*(\S+)\s+kWh")


def read_totals(output_log: str, power_log: str) -> tuple[Optional[float], dict[str, list[list[float]]]]:
    """(total kWh or None, component -> per-epoch average power samples) from carbontracker's output log (totals)
    and its per-epoch power log."""
    from carbontracker import parser

    with open(output_log) as f:
        output = f.read()
    actual, _pred = parser.get_consumption(output)
    energy = None if actual is None else actual.get("energy (kWh)")
    if energy is None:
        match = ENERGY_LINE.search(output)
        energy = float(match.group(1)) if match else None
    with open(power_log) as f:
        powers = parser.get_avg_power_usages(f.read())
    return (None if energy is None else float(energy)), powers
