"""Which runs pool into a table cell, and what is left out: one rule for every family's tables.

- Only runs with status ok count; every other run is excluded and counted, by status, in one note
  (``split_runs``, ``excluded_note``).
- A cell pools the runs of one setting: runs that agree on every knob that changes what is computed, so that only
  their seeds differ (``cells``). Knob values compare across a CSV round trip (``render.knob_value``). A knob a run
  does not record, or records as None because it does not apply to it (k of the full training set), matches any
  value of that knob and never decides it; a knob no run records is ignored.
- A table that shows one setting (one row per method, say) takes the most common whole combination of the knobs it
  fixes, the one closest to ``preferred`` knob by knob (in the order given) on ties (``modal_setting``); runs at
  other settings are left out and counted (``left_out_note``). Whole combinations are counted, not one knob at a
  time, so that a sweep over two knobs cannot outvote a table's many runs at one setting knob by knob.
- Two runs of one cell with the same seed are named (``seed_note``): usually the same run under two settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sustainml_exp.results.record import OK
from sustainml_exp.tables.render import knob_value, tie_order

__all__ = ["cells", "dataset_order", "excluded_note", "knob_values", "left_out_note", "matching", "modal_setting",
           "seed_note", "settings_text", "split_runs"]

# Columns every table groups or labels by, as strings (a CSV round trip may turn them into numbers or NaN).
LABEL_COLUMNS = ("dataset", "method")


def split_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok runs, excluded runs) of a merged frame; the ok runs have every LABEL_COLUMNS column as strings."""
    if frame.empty or "status" not in frame.columns:
        return frame.iloc[0:0].copy(), frame
    is_ok = (frame["status"].astype(str) == OK).to_numpy()
    ok = frame[is_ok].copy()
    for column in LABEL_COLUMNS:
        ok[column] = ok[column].astype(str) if column in ok.columns else ""
    return ok, frame[~is_ok]


def excluded_note(excluded: pd.DataFrame) -> list[str]:
    """How many runs did not finish (failed, oom, ...), by status; nothing when all did."""
    if excluded.empty:
        return []
    statuses = Counter(str(s) for s in excluded["status"]) if "status" in excluded.columns else Counter()
    detail = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    return [f"{len(excluded)} run(s) with status other than ok are excluded" + (f" ({detail})." if detail else ".")]


def left_out_note(n: int, detail: str = "") -> list[str]:
    """The ok runs at other settings than a table's, when there are any."""
    return [f"{n} run(s) at other settings{detail} are not included."] if n else []


def dataset_order(datasets: Iterable[Any], first: Sequence[str]) -> list[str]:
    """The datasets present: those of ``first`` in its order (the paper's), then the others alphabetically."""
    present = {str(d) for d in datasets}
    return [d for d in first if d in present] + sorted(present - set(first))


def knob_values(rows: pd.DataFrame, knob: str) -> list[Any]:
    """The comparable values of ``knob`` (None where a run does not record it)."""
    return [knob_value(v) for v in rows[knob]] if knob in rows.columns else [None] * len(rows)


def cells(rows: pd.DataFrame, knobs: Sequence[str]) -> dict[tuple, pd.DataFrame]:
    """The runs of every setting of ``knobs`` present, in first-seen order: each a cell of seeds."""
    positions: dict[tuple, list[int]] = {}
    for position, setting in enumerate(zip(*(knob_values(rows, k) for k in knobs))):
        positions.setdefault(setting, []).append(position)
    return {setting: rows.iloc[idx] for setting, idx in positions.items()}


def modal_setting(rows: pd.DataFrame, knobs: Iterable[str],
                  preferred: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The most common combination of the knob values (the one closest to ``preferred``, knob by knob in order, on
    ties) and the rows at it. Runs with a value for every knob are counted (all runs when none has); the knobs no
    run records are left out of the setting."""
    values = {knob: knob_values(rows, knob) for knob in knobs}
    knobs = [knob for knob, column in values.items() if any(v is not None for v in column)]
    if rows.empty or not knobs:
        return rows, {}
    combos = list(zip(*(values[k] for k in knobs)))
    counts = Counter(c for c in combos if None not in c) or Counter(combos)
    top = max(counts.values())
    tied = [c for c, n in counts.items() if n == top]
    best = min(tied, key=lambda c: tuple((v != preferred.get(k), tie_order(v)) for k, v in zip(knobs, c)))
    chosen = dict(zip(knobs, best))
    return matching(rows, chosen), chosen


def matching(rows: pd.DataFrame, chosen: dict[str, Any], *, skip: Sequence[str] = ()) -> pd.DataFrame:
    """The rows at every chosen knob value except those in ``skip``; a run without a value matches any."""
    keep = np.ones(len(rows), dtype=bool)
    for knob, value in chosen.items():
        if knob in skip or value is None:
            continue
        keep &= np.array([v is None or v == value for v in knob_values(rows, knob)], dtype=bool)
    return rows[keep]


def settings_text(chosen: dict[str, Any], shown: Callable[[str, Any], str] = lambda knob, value: str(value)) -> str:
    return ", ".join(f"{knob}={shown(knob, value)}" for knob, value in chosen.items() if value is not None)


def seed_note(label: str, rows: pd.DataFrame) -> list[str]:
    """A note when runs pooled into one cell repeat a seed (the same run under two settings, usually)."""
    if "seed" not in rows.columns:
        return []
    seeds = [str(knob_value(s)) for s in rows["seed"]]
    if len(set(seeds)) < len(seeds):
        return [f"{label}: {len(seeds)} runs share {len(set(seeds))} seeds."]
    return []
