"""What each table row cost, beside its quality: mean ± std over the row's runs (its seeds) of the recorded times,
energy and CO2. One helper for every family's tables; a family picks the columns that apply to it.

The helper only reads record columns from the rows it is given, so it works on whatever rows a table pools into
one cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sustainml_exp.tables.render import DASH, numeric

__all__ = ["CO2", "ENERGY", "RUN_COSTS", "SELECT", "TRAIN", "WALL", "CostColumn", "cost_cells", "cost_headers",
           "cost_note", "mean_std_significant"]

# Significant digits of a cost cell: costs spread over orders of magnitude (0.01 s to hours, 1e-6 kWh up).
SIGNIFICANT = 3


@dataclass(frozen=True)
class CostColumn:
    field: str  # the record column
    header: str  # the table column
    meaning: str  # one sentence for the table's notes
    scientific: bool = False  # tiny quantities (kWh of a CPU run) read better as 1.23e-05


TRAIN = CostColumn("train_s", "Train (s)", "Train: seconds in the training loop (no evaluation, no selection).")
WALL = CostColumn("wall_s", "Wall (s)", "Wall: seconds of the whole run (data loading, selection, training and "
                                        "evaluation, attacks included).")
SELECT = CostColumn("select_s", "Select (s)", "Select: seconds to choose the coreset or condense the synthetic set "
                                              "(or to read a precomputed one); the full set takes none.")
ENERGY = CostColumn("energy_kwh", "Energy (kWh)", "Energy: the run's metered energy in kWh (carbontracker, PUE "
                                                  "included; '–' when energy=none).", scientific=True)
CO2 = CostColumn("co2_g", "CO2 (g)", "CO2: energy x the configured carbon intensity, in grams.")
# What every run records, whatever the family.
RUN_COSTS = (TRAIN, WALL, ENERGY, CO2)


def _decimals(value: float) -> int:
    """Decimals that show ``SIGNIFICANT`` significant digits of ``value`` (none for values of 100 and more)."""
    if value == 0 or not math.isfinite(value):
        return SIGNIFICANT - 1
    return max(0, SIGNIFICANT - 1 - math.floor(math.log10(abs(value))))


def mean_std_significant(values: np.ndarray, scientific: bool = False) -> str:
    """Mean ± sample std (ddof = 1) to ``SIGNIFICANT`` significant digits of the mean (the std at the same
    decimals, or in scientific notation); the value alone for one run, '–' for none."""
    if values.size == 0:
        return DASH
    mean = float(values.mean())
    if scientific:
        text = f"{mean:.{SIGNIFICANT - 1}e}"
        return text if values.size == 1 else f"{text} ± {float(values.std(ddof=1)):.1e}"
    decimals = _decimals(mean)
    text = f"{mean:.{decimals}f}"
    return text if values.size == 1 else f"{text} ± {float(values.std(ddof=1)):.{decimals}f}"


def cost_headers(columns: Sequence[CostColumn]) -> tuple[str, ...]:
    return tuple(column.header for column in columns)


def cost_cells(rows: pd.DataFrame, columns: Sequence[CostColumn]) -> list[str]:
    """One cell per column: mean ± std over ``rows`` of its finite values ('–' where no row has one)."""
    return [mean_std_significant(numeric(rows, column.field), column.scientific) for column in columns]


def cost_note(columns: Sequence[CostColumn]) -> str:
    return ("Cost columns, mean ± sample std (ddof=1) over the runs of the row: "
            + " ".join(column.meaning for column in columns))
