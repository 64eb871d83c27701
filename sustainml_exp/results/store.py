"""Atomic per-run JSON records and their merge into ``<results_dir>/<family>.csv``.

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
from sustainml_exp.results.record import COMMON_COLUMNS, RunRecord, record_problem

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


def record_paths(results_dir: Path, family: str, run_id: str, output_dir: Path | None) -> list[Path]:
    paths = [Path(results_dir) / "runs" / family / f"{run_id}.json"]
    if output_dir is not None:
        paths.append(Path(output_dir) / "record.json")
    return paths


def write_record(record: RunRecord, paths: Iterable[Path]) -> None:
    text = json.dumps(_finite_or_none(record.to_json()), indent=2, sort_keys=False, default=_json_default)
    for path in paths:
        atomic_write_text(Path(path), text + "\n")


def read_record(results_dir: Path, family: str, run_id: str) -> RunRecord | None:
    """The stored record of ``run_id``, or None when there is none (or it cannot be parsed)."""
    path = record_paths(Path(results_dir), family, run_id, None)[0]
    try:
        with open(path, encoding="utf-8") as handle:
            return RunRecord.from_json(json.load(handle))
    except (OSError, ValueError, TypeError):
        return None


def _read_placeable(path: Path, family: str) -> tuple[RunRecord | None, str | None]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not raw.strip():
        return None, "empty file"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    problem = record_problem(data, family)
    if problem:
        return None, problem
    try:
        return RunRecord.from_json(data), None
    except (ValueError, TypeError) as exc:
        return None, str(exc).splitlines()[0]


def scan_records(results_dir: Path, family: str) -> tuple[list[RunRecord], Skipped]:
    """The placeable records under ``<results_dir>/runs/<family>/`` and, for every other file there, why not."""
    records: list[RunRecord] = []
    skipped: Skipped = []
    for path in sorted((Path(results_dir) / "runs" / family).glob("*.json")):
        record, problem = _read_placeable(path, family)
        if record is None:
            skipped.append((path, str(problem)))
        else:
            records.append(record)
    return records, skipped


def load_records(results_dir: Path, family: str) -> list[RunRecord]:
    """The placeable records of ``family`` (see ``scan_records`` for the files left out and why)."""
    return scan_records(results_dir, family)[0]


def _is_column_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def merge_records(results_dir: Path, family: str, records: list[RunRecord] | None = None) -> "pd.DataFrame":
    """Merge every record of ``family`` into ``<results_dir>/<family>.csv`` (one row per run_id).

    Scalar fields become columns (common columns first); nested fields (config, versions, artifacts) stay in
    the JSON records. A run_id recorded twice keeps its most recent record.
    """
    import pandas as pd

    if records is None:
        records = load_records(results_dir, family)
    rows = [{k: v for k, v in r.to_json().items() if _is_column_value(v)} for r in records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=list(COMMON_COLUMNS))
    else:
        frame = frame.sort_values("started_utc").drop_duplicates("run_id", keep="last")
        extra = [c for c in frame.columns if c not in COMMON_COLUMNS]
        frame = frame.reindex(columns=[*COMMON_COLUMNS, *extra]).reset_index(drop=True)
    atomic_write_text(Path(results_dir) / f"{family}.csv", frame.to_csv(index=False))
    return frame
