"""The contract between the runner and an experiment family: what a family declares, what its functions get and
what they must return.

A family is a package whose ``__init__.py`` declares ``FAMILY = Family(...)`` and imports nothing heavy (the CLI
reads it at start-up). It provides:

- a typed schema: a dataclass extending ``BaseRunConfig`` with the family's knobs, whose ``validate()`` raises
  ``ConfigError`` with one line and whose ``record_fields()`` names the knobs recorded as columns of every row;
- Hydra presets ``experiment/<preset>.yaml`` (``# @package _global_``, defaults ``/schema: <family>`` then
  ``_self_``): the built-in families' live in conf/experiment/, a family outside the package names its folder in
  ``config_dir``;
- ``run(cfg, ctx) -> dict``: one seeded run (a ``RunFunction``); the dict holds at least ``RUN_METRICS`` and any
  other metric, flat (columns of the CSV), plus an optional nested ``artifacts`` dict (paths, histograms) that stays
  in the JSON record. Keys the runner records itself (``RUNNER_FIELDS``) are refused;
- ``write_tables(frame, records, out_dir) -> [paths]`` (a ``TablesFunction``): the family's tables and figures from
  its merged records (tables/rows.py has the shared rule for which runs pool into a cell).

How the registry finds families (built-in, entry point, ``SML_FAMILIES``) is in registry.py; a worked example is
docs/adding_a_family.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sustainml_exp.config.schema import BaseRunConfig
from sustainml_exp.progress import Progress
from sustainml_exp.results.record import COMMON_COLUMNS, RunRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RUNNER_FIELDS", "RUN_METRICS", "Family", "RunContext", "RunFunction", "TablesFunction",
           "check_run_metrics"]

# What every run function returns (the common columns a family measures, and its training time).
RUN_METRICS = ("epochs", "epochs_per_s", "train_s", "peak_mem_mb", "peak_mem_source", "n_params")
# Common columns the runner fills from the config, the environment and the energy meter; ``method`` comes from the
# schema's record_fields().
RUNNER_FIELDS = tuple(c for c in COMMON_COLUMNS if c not in RUN_METRICS and c != "method") + ("values", "versions",
                                                                                             "config")


@dataclass(frozen=True)
class RunContext:
    """What a family's ``run(cfg, ctx)`` gets besides its config."""

    device: str  # resolved: cpu | cuda
    output_dir: Path  # the run's own folder, for artifacts
    # make_progress(total_epochs, what) -> Progress: one bar or log line per epoch, labelled "<experiment>[what]".
    make_progress: Callable[[int, str], Progress]


ConfigT = TypeVar("ConfigT", bound=BaseRunConfig, contravariant=True)


class RunFunction(Protocol[ConfigT]):
    def __call__(self, cfg: ConfigT, ctx: RunContext) -> dict[str, Any]: ...


class TablesFunction(Protocol):
    """Writes the family's tables and figures into ``out_dir`` and returns the written paths. ``frame``: one row per
    run (every status; the merged CSV); ``records``: the same runs as records, for their nested artifacts."""

    def __call__(self, frame: pd.DataFrame, records: Sequence[RunRecord], out_dir: Path) -> list[Path]: ...


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str  # the family's folder under results/runs/ and its CSV's name; also its schema's name in Hydra
    schema: type[BaseRunConfig]
    # "module:function" references, imported only when a run or sml-tables needs them (they import torch & co.).
    run: str  # a RunFunction
    tables: str  # a TablesFunction
    # OmegaConf resolvers the family's config files use, as (name, function) pairs.
    resolvers: tuple[tuple[str, Callable[..., Any]], ...] = ()
    # Folder holding experiment/<preset>.yaml, added to Hydra's search path; None for the built-in families (their
    # presets are in sustainml_exp.conf).
    config_dir: Path | None = None

    def load_run(self) -> RunFunction:
        return _load(self.run)

    def load_tables(self) -> TablesFunction:
        return _load(self.tables)


def check_run_metrics(family: str, metrics: Any) -> None:
    """Raise TypeError (one line) unless ``metrics`` keeps the contract above."""
    if not isinstance(metrics, dict):
        raise TypeError(f"family {family}: run() returned {type(metrics).__name__}, not a dict of metrics")
    missing = [key for key in RUN_METRICS if key not in metrics]
    if missing:
        raise TypeError(f"family {family}: run() returned no {', '.join(missing)} (every run returns "
                        f"{', '.join(RUN_METRICS)})")
    reserved = [key for key in metrics if key in RUNNER_FIELDS]
    if reserved:
        raise TypeError(f"family {family}: run() returned {', '.join(reserved)}, which the runner records itself")

