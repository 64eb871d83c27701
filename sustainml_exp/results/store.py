"""Atomic per-run JSON records and their merge into ``<results_dir>/<experiment>.csv``.

Concurrent jobs (Slurm arrays) never share a file: each writes its own record via temp file + rename, and only
``merge_records`` (run by sml-tables) writes the CSV, also atomically. Files are created with the process's
umask (like any ``open``), so a results folder shared with colleagues stays readable to them.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sustainml_exp.errors import StorageError
from sustainml_exp.results.columns import COMMON_COLUMNS, PLACEMENT_TYPES, RUN_STATUSES

if TYPE_CHECKING:
    import pandas as pd

# Problems with one record file, as (path, reason): sml-tables warns about each and builds from the rest.
Skipped = list[tuple[Path, str]]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open's mode passes through the umask; tempfile.mkstemp would force 0600 on every record and table.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # KeyboardInterrupt included: an interrupted write must leave no temp file behind.
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write, rename and remove a probe file in it, the way a record is written.

    Raises StorageError (one line: the folder and the reason) when any step fails, after removing the folders this
    call created."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".sml-write-probe-{os.getpid()}-{secrets.token_hex(4)}"
        atomic_write_bytes(probe, b"probe\n")
        probe.unlink()
    except OSError as exc:
        for created in missing:  # deepest first
            try:
                created.rmdir()
            except OSError:
                pass
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise StorageError(f"cannot write records to {folder} ({reason}); set results_dir to a writable "
                           "folder") from exc


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a run record")


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN; null round-trips to NaN in the CSV.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def record_paths(results_dir: Path, experiment: str, run_id: str, output_dir: Path | None) -> list[Path]:
    paths = [Path(results_dir) / "runs" / experiment / f"{run_id}.json"]
    if output_dir is not None:
        paths.append(Path(output_dir) / "record.json")
    return paths


def write_record(record: dict[str, Any], paths: Iterable[Path]) -> None:
    missing = [c for c in COMMON_COLUMNS if c not in record]
    if missing:
        raise ValueError(f"run record lacks common columns: {', '.join(missing)}")
    text = json.dumps(_finite_or_none(record), indent=2, sort_keys=False, default=_json_default)
    for path in paths:
        atomic_write_text(Path(path), text + "\n")


def read_record(results_dir: Path, experiment: str, run_id: str) -> dict[str, Any] | None:
    """The stored record of ``run_id``, or None when there is none (or it cannot be parsed)."""
    path = record_paths(Path(results_dir), experiment, run_id, None)[0]
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_JSON_TYPE_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
                    type(None): "null"}
_KIND_NAMES = {str: "a string", int: "an integer"}


def record_problem(record: Any, experiment: str) -> str | None:
    """Why ``record`` (parsed JSON from the ``experiment`` folder) cannot be placed in its tables, or None."""
    if not isinstance(record, dict):
        return f"a JSON {_JSON_TYPE_NAMES.get(type(record), type(record).__name__)}, not a record object"
    missing = [key for key in PLACEMENT_TYPES if record.get(key) is None]
    if missing:
        return f"lacks {', '.join(missing)}"
    wrong = [f"{key}={record[key]!r} is not {_KIND_NAMES[kind]}" for key, kind in PLACEMENT_TYPES.items()
             if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool))]
    if wrong:
        return "; ".join(wrong)
    if record["experiment"] != experiment:
        return f"experiment={record['experiment']!r}: a record of another experiment in the {experiment} folder"
    if record["status"] not in RUN_STATUSES:
        return f"status={record['status']!r} is not one of {', '.join(RUN_STATUSES)}"
    return None


def _read_placeable(path: Path, experiment: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not raw.strip():
        return None, "empty file"
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    problem = record_problem(record, experiment)
    return (None, problem) if problem else (record, None)


def scan_records(results_dir: Path, experiment: str) -> tuple[list[dict[str, Any]], Skipped]:
    """The placeable records under ``<results_dir>/runs/<experiment>/`` and, for every other file there, why not."""
    records: list[dict[str, Any]] = []
    skipped: Skipped = []
    for path in sorted((Path(results_dir) / "runs" / experiment).glob("*.json")):
        record, problem = _read_placeable(path, experiment)
        if record is None:
            skipped.append((path, str(problem)))
        else:
            records.append(record)
    return records, skipped


def load_records(results_dir: Path, experiment: str) -> list[dict[str, Any]]:
    """The placeable records of ``experiment`` (see ``scan_records`` for the files left out and why)."""
    return scan_records(results_dir, experiment)[0]


def _is_column_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def merge_records(results_dir: Path, experiment: str,
                  records: list[dict[str, Any]] | None = None) -> "pd.DataFrame":
    """Merge every record of ``experiment`` into ``<results_dir>/<experiment>.csv`` (one row per run_id).

    Scalar fields become columns (common columns first); nested fields (config, versions, artifacts) stay in
    the JSON records. A run_id recorded twice keeps its most recent record.
    """
    import pandas as pd

    if records is None:
        records = load_records(results_dir, experiment)
    rows = [{k: v for k, v in r.items() if _is_column_value(v)} for r in records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=list(COMMON_COLUMNS))
    else:
        frame = frame.sort_values("started_utc").drop_duplicates("run_id", keep="last")
        extra = [c for c in frame.columns if c not in COMMON_COLUMNS]
        frame = frame.reindex(columns=[*COMMON_COLUMNS, *extra]).reset_index(drop=True)
    atomic_write_text(Path(results_dir) / f"{experiment}.csv", frame.to_csv(index=False))
    return frame
