"""One run = seed everything, meter energy, call the family, write exactly one record.

A run that raises still records status failed (or oom) with the error, and its full traceback goes to the run's
log and to ``traceback.txt`` in its output folder; an interrupted run (Ctrl-C, SIGTERM, submitit's exit before a
requeue) writes no record and leaves no temp file, so a requeued task starts clean. A run whose run_id already has
an ok record is skipped unless ``rerun=true``, and a rerun that fails never replaces that ok record.

The record goes to the run's output folder first, then to the results store; when the store cannot be written at
the end (disk full, permissions changed), the log says in one line where the record was kept.

Contract for a family's ``run(cfg, ctx)``: Ctrl-C and SIGTERM reach Python code only between bytecodes, so a single
native call (a solver, a C extension loop) must either return within seconds or run where a signal can end it (a
child process, or a library callback that checks for interruption). Let KeyboardInterrupt propagate: never catch
it or BaseException without re-raising.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sustainml_exp.config.schema import BaseRunConfig, non_semantic_keys
from sustainml_exp.errors import ConfigError
from sustainml_exp.family import RunContext, check_run_metrics
from sustainml_exp.memory_budget import MemoryPreflightError
from sustainml_exp.progress import Progress
from sustainml_exp.provenance import config_hash, git_state, library_versions, slurm_ids
from sustainml_exp.registry import family_of
from sustainml_exp.results import check_writable, read_record, record_paths, write_record
from sustainml_exp.results.record import FAILED, OK, OOM, RunRecord

log = logging.getLogger("sustainml_exp")


@dataclass
class RunOutcome:
    """What ``run_experiment`` did: the record, whether the run was a skip, and where its record is."""

    record: RunRecord
    skipped: bool
    stored: bool  # the record is in the results store (False: only in the run's output folder, or nowhere)


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible to torch; allowed here: auto, cpu")
    return requested


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA generators too


def run_identity(cfg: BaseRunConfig, config_dict: dict[str, Any]) -> tuple[str, str]:
    """(cfg_hash, run_id) of a resolved config. Deterministic, so a rerun of the same config and seed replaces
    its record and sweeps can skip finished runs; keys marked NOT_HASHED (where results go, energy metering,
    threads, progress, ...) do not count."""
    cfg_hash = config_hash(config_dict, non_semantic_keys(type(cfg)))
    return cfg_hash, f"{cfg_hash}-s{cfg.seed}"


def finished_record(cfg: BaseRunConfig, run_id: str) -> RunRecord | None:
    """The ok record that makes this run a skip, or None when it must run (none yet, failed, or rerun=true)."""
    if cfg.rerun:
        return None
    record = read_record(Path(cfg.results_dir), cfg.family, run_id)
    return record if record is not None and record.status == OK else None


def _energy_meter(cfg: BaseRunConfig, output_dir: Path, device: str):
    from sustainml_exp.energy import make_energy_meter

    return make_energy_meter(cfg.energy, log_dir=output_dir / "energy", device=device)


def run_experiment(cfg: BaseRunConfig, config_dict: dict[str, Any], output_dir: Path,
                   experiment: str | None = None) -> RunOutcome:
    """Run one configured experiment and record it; an interrupt propagates and records nothing. ``experiment``:
    the preset the config came from (recorded; the family's name when None)."""
    family = family_of(cfg)
    output_dir = Path(output_dir)
    cfg_hash, run_id = run_identity(cfg, config_dict)
    store_path = record_paths(Path(cfg.results_dir), family.name, run_id, None)[0]
    done = finished_record(cfg, run_id)
    if done is not None:
        log.info("run %s already has an ok record (%s); skipped (rerun=true runs it again)", run_id, store_path)
        return RunOutcome(done, skipped=True, stored=True)
    experiment = experiment or family.name
    sha, dirty = git_state()
    versions = library_versions()
    record = RunRecord(run_id=run_id, family=family.name, experiment=experiment, dataset=cfg.dataset, seed=cfg.seed,
                       started_utc=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                       energy_backend=cfg.energy.backend, device=cfg.device, git_sha=sha, git_dirty=dirty,
                       cfg_hash=cfg_hash, torch_version=versions.get("torch", ""), **slurm_ids(), versions=versions,
                       config=config_dict)
    record.update(cfg.record_fields())
    t0 = time.perf_counter()
    meter = None
    threads_before = None
    try:
        # Before any work: a store that cannot take the record would waste the whole run (a compute node may see
        # another file system than the submitting host, which sml-run checked).
        check_writable(store_path.parent)
        device = resolve_device(cfg.device)
        record.device = device
        if device == "cuda":
            import torch

            record.gpu_name = torch.cuda.get_device_name()
        seed_everything(cfg.seed)
        if cfg.threads is not None:
            import torch

            # Restored afterwards: the jobs of a local multirun share this process.
            threads_before = torch.get_num_threads()
            torch.set_num_threads(cfg.threads)
        meter = _energy_meter(cfg, output_dir, device)
        meter.start()
        meter.epoch_start()
        ctx = RunContext(
            device=device,
            output_dir=output_dir,
            make_progress=lambda total, what: Progress(total, f"{experiment}[{what}]", cfg.progress),
        )
        metrics = family.load_run()(cfg, ctx)
        meter.epoch_end()
        check_run_metrics(family.name, metrics)
        record.update(metrics)
        record.status = OK
    except KeyboardInterrupt:
        meter = None  # end now: stopping the meter may wait up to energy.timeout_s for carbontracker
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must become a recorded row
        record.status = OOM if _is_oom(exc) else FAILED
        record.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        record.update(getattr(exc, "record_fields", {}))  # what a refused run knew, e.g. its estimated peak
        if not isinstance(exc, MemoryPreflightError):  # the CLI prints a refusal as its one error line
            _report_failure(record, output_dir)
    finally:
        if meter is not None:
            report = meter.stop()
            record.update(asdict(report))
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
    record.wall_s = time.perf_counter() - t0
    return RunOutcome(record, skipped=False, stored=_save_record(record, Path(cfg.results_dir), output_dir))


def _report_failure(record: RunRecord, output_dir: Path) -> None:
    """One line on the console; the full traceback in traceback.txt and in the run's log files."""
    text = traceback.format_exc()
    where = output_dir / "traceback.txt"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        where.write_text(text, encoding="utf-8")
    except OSError as exc:
        where = None
        log.warning("could not save the traceback in %s (%s)", output_dir, exc)
    log.error("run %s %s: %s%s", record.run_id, record.status, record.error,
              f" (traceback: {where})" if where else "")
    # The console keeps one line; file handlers (Hydra's <job>.log in the output folder) get the whole traceback.
    entry = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run %s %s", (record.run_id, record.status),
                           sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(entry)


def _save_record(record: RunRecord, results_dir: Path, output_dir: Path) -> bool:
    """Write the record to the output folder, then to the store; True when the store has it.

    A failed rerun leaves the store's ok record in place. Every outcome other than a stored record is one log
    line saying where the record is."""
    store_path, kept = record_paths(results_dir, record.family, record.run_id, output_dir)
    try:
        write_record(record, [kept])
    except OSError as exc:
        kept_problem: str | None = f"{kept} ({exc})"
    else:
        kept_problem = None
    run = f"run {record.run_id}"
    if record.status != OK:
        earlier = read_record(results_dir, record.family, record.run_id)
        if earlier is not None and earlier.status == OK:
            log.error("%s %s; its earlier ok record %s is kept (a failed rerun never replaces it); this run's "
                      "record: %s", run, record.status, store_path, kept_problem or kept)
            return False
    try:
        write_record(record, [store_path])
        return True
    except OSError as exc:
        if kept_problem is None:
            log.error("%s: its record could not be written to %s (%s); it is kept in %s: copy it there once the "
                      "problem is fixed", run, store_path, exc, kept)
        else:
            log.error("%s: its record could be written neither to %s (%s) nor to %s; the record as JSON: %s", run,
                      store_path, exc, kept_problem, json.dumps(record.to_json(), default=str))
        return False


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, MemoryPreflightError)):
        return True
    try:
        import torch
    except ImportError:
        return False
    return isinstance(exc, torch.OutOfMemoryError)
