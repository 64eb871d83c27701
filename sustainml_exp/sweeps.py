"""What each job of a multirun did, read from the records once the sweep has ended: the summary line and the
exit status of ``sml-run -m`` (local or Slurm alike, since the records are the only thing both leave behind).

Before the sweep starts, each job's stored record is noted (its ``started_utc``, and whether it makes the job a
skip). Afterwards a job's outcome is the store's record if a new one appeared; else the record in the job's output
folder (a failed rerun that kept an earlier ok record, or a record the store could not take); else a skip if the
job was one; else "no record" (killed, cancelled or crashed before writing one).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sustainml_exp.results import read_record


@dataclass(frozen=True)
class PlannedJob:
    run_id: str
    results_dir: Path
    experiment: str
    skip: bool  # an ok record makes this job a skip (rerun=false)
    stored_before: str | None  # started_utc of the stored record when the sweep started


def plan_job(run_id: str, results_dir: Path, experiment: str, skip: bool) -> PlannedJob:
    record = read_record(results_dir, experiment, run_id)
    return PlannedJob(run_id, Path(results_dir), experiment, skip, record.get("started_utc") if record else None)


def _sweep_records(sweep_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The records in the sweep's job output folders, by run_id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(sweep_dir.rglob("record.json")) if sweep_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("run_id"), str):
            found.setdefault(record["run_id"], []).append(record)
    return found


def job_outcome(job: PlannedJob, in_sweep: dict[str, list[dict[str, Any]]]) -> str:
    """ok | skipped | failed | oom | 'failed: <why>' for one job after the sweep."""
    stored = read_record(job.results_dir, job.experiment, job.run_id)
    if stored is not None and stored.get("started_utc") != job.stored_before:
        return str(stored.get("status"))
    fresh = [r for r in in_sweep.get(job.run_id, []) if r.get("started_utc") != job.stored_before]
    if fresh:
        status = str(fresh[-1].get("status"))
        if status == "ok":
            return "failed: record not in the results store"
        return f"{status}: earlier ok record kept" if stored is not None and stored.get("status") == "ok" else status
    if job.skip and stored is not None and stored.get("status") == "ok":
        return "skipped"
    return "failed: no record"


def summary(jobs: list[PlannedJob], sweep_dir: Path) -> tuple[str, bool]:
    """(one summary line, whether any job failed)."""
    in_sweep = _sweep_records(sweep_dir)
    outcomes = [(job.run_id, job_outcome(job, in_sweep)) for job in jobs]
    counts = Counter("ok" if o == "ok" else "skipped" if o == "skipped" else "failed" for _, o in outcomes)
    failed = [f"{run_id} ({outcome})" for run_id, outcome in outcomes if outcome not in ("ok", "skipped")]
    line = (f"{len(jobs)} job(s): {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed"
            + (f": {', '.join(failed)}" if failed else "") + f"; job folders under {sweep_dir}")
    return line, bool(failed)
