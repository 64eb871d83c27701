"""The run record: one dataclass written by the runner, stored by the store and read by the tables.

On disk a record is one flat JSON object: the common columns (COMMON_COLUMNS, in CSV order), then the family's knobs
and metrics (``values``: more CSV columns), then ``artifacts`` (nested: paths, histograms), ``versions`` and the
resolved ``config``, which stay in the JSON. Records written before the ``family`` field named the family in
``experiment``; they read as if they had both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

__all__ = ["COMMON_COLUMNS", "FAILED", "OK", "OOM", "PLACEMENT_TYPES", "RUN_STATUSES", "RunRecord", "RunStatus",
           "record_problem"]

# Every status a run can end with. A new one (a new outcome to tell apart in the tables' excluded-runs note) is
# added here and nowhere else; a new common column is a new field of RunRecord below.
RunStatus = Literal["ok", "failed", "oom"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
OK, FAILED, OOM = RUN_STATUSES
NAN = math.nan
# Nested parts of a record, kept in the JSON only.
_NESTED = ("values", "artifacts", "versions", "config")


@dataclass(kw_only=True)
class RunRecord:
    run_id: str  # <cfg_hash>-s<seed>
    family: str  # results/runs/<family>/, <family>.csv
    experiment: str = ""  # the preset it ran from (experiment=gnn_flickr)
    dataset: str = ""
    method: str = ""
    seed: int = 0
    status: RunStatus = FAILED
    error: str = ""  # empty when ok
    started_utc: str = ""
    wall_s: float = NAN
    epochs: int = 0
    epochs_per_s: float = NAN
    peak_mem_mb: float = NAN
    peak_mem_source: str = ""
    n_params: int | None = None
    energy_kwh: float = NAN
    co2_g: float = NAN
    energy_backend: str = ""
    cpu_power_source: str = ""
    gpu_power_source: str = ""
    device: str = ""
    gpu_name: str = ""
    git_sha: str = ""
    git_dirty: bool | None = None
    cfg_hash: str = ""  # the config's hash without the keys that do not change what is computed
    torch_version: str = ""
    slurm_job_id: str = ""
    slurm_array_task_id: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # the family's knobs and metrics (flat: CSV columns)
    artifacts: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status={self.status!r} is not a run status; allowed: {', '.join(RUN_STATUSES)}")

    def update(self, entries: Mapping[str, Any]) -> None:
        """Set common columns by name, merge ``artifacts``, and keep every other entry in ``values``."""
        for key, value in entries.items():
            if key in COMMON_COLUMNS:
                setattr(self, key, value)
            elif key == "artifacts":
                self.artifacts.update(value)
            elif key in _NESTED:
                raise KeyError(f"{key} is set on the record, not through update()")
            else:
                self.values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """A common column, a nested part or a family value by name."""
        if key in COMMON_COLUMNS or key in _NESTED:
            return getattr(self, key)
        return self.values.get(key, default)

    def to_json(self) -> dict[str, Any]:
        flat = {column: getattr(self, column) for column in COMMON_COLUMNS}
        flat.update(self.values)
        if self.artifacts:
            flat["artifacts"] = self.artifacts
        flat.update(versions=self.versions, config=self.config)
        return flat

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of a parsed JSON object; ValueError (one line) when it is not one."""
        data = _with_family(data)
        missing = [key for key in ("run_id", "family") if not isinstance(data.get(key), str) or not data[key]]
        if missing:
            raise ValueError(f"not a run record: no {' or '.join(missing)}")
        common = {key: data.pop(key) for key in COMMON_COLUMNS if key in data}
        nested = {key: data.pop(key) for key in ("artifacts", "versions", "config") if isinstance(data.get(key), dict)}
        # JSON has no NaN: the store writes NaN as null.
        common = {key: NAN if value is None and isinstance(_DEFAULTS[key], float) else value
                  for key, value in common.items()}
        return cls(**common, **nested, values=data)


COMMON_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord) if f.name not in _NESTED)
_DEFAULTS = {f.name: f.default for f in fields(RunRecord) if f.name in COMMON_COLUMNS}


# What sml-tables needs to place a record (which run, family, table row and seed, which copy is newest), with the
# type each must have. A record lacking one is skipped with a warning; other columns may be missing (empty cells).
PLACEMENT_TYPES: dict[str, type] = {
    "run_id": str,
    "family": str,
    "dataset": str,
    "seed": int,
    "status": str,
    "started_utc": str,
}
_JSON_TYPE_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
                    type(None): "null"}
_KIND_NAMES = {str: "a string", int: "an integer"}


def _with_family(data: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(data)
    if "family" not in data and "experiment" in data:
        data["family"] = data["experiment"]
    return data


def record_problem(data: Any, family: str) -> str | None:
    """Why ``data`` (parsed JSON from the ``family`` folder) cannot be placed in its tables, or None."""
    if not isinstance(data, dict):
        return f"a JSON {_JSON_TYPE_NAMES.get(type(data), type(data).__name__)}, not a record object"
    data = _with_family(data)
    missing = [key for key in PLACEMENT_TYPES if data.get(key) is None]
    if missing:
        return f"lacks {', '.join(missing)}"
    wrong = [f"{key}={data[key]!r} is not {_KIND_NAMES[kind]}" for key, kind in PLACEMENT_TYPES.items()
             if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool))]
    if wrong:
        return "; ".join(wrong)
    if data["family"] != family:
        return f"family={data['family']!r}: a record of another family in the {family} folder"
    if data["status"] not in RUN_STATUSES:
        return f"status={data['status']!r} is not one of {', '.join(RUN_STATUSES)}"
    return None
