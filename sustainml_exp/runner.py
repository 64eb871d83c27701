"""One run = seed everything, meter energy, call the family, write exactly one record.

A run that raises still records status failed (or oom) with the error; an interrupted run (Ctrl-C, SIGTERM from
Slurm, submitit's exit before a requeue) writes no record and leaves no temp file, so a requeued task starts clean.
A run whose run_id already has an ok record is skipped unless ``rerun=true``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sustainml_exp.config.schema import NON_SEMANTIC_KEYS, BaseRunConfig
from sustainml_exp.errors import ConfigError
from sustainml_exp.memory_budget import MemoryPreflightError
from sustainml_exp.progress import Progress
from sustainml_exp.provenance import config_hash, git_state, library_versions, slurm_ids
from sustainml_exp.registry import get_family
from sustainml_exp.results import read_record, record_paths, write_record

log = logging.getLogger("sustainml_exp")


@dataclass
class RunContext:
    """What a family's ``run(cfg, ctx)`` gets besides its config."""

    device: str  # resolved: cpu | cuda
    output_dir: Path
    make_progress: Callable[[int, str], Progress]


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


def run_identity(config_dict: dict[str, Any], seed: int) -> tuple[str, str]:
    """(cfg_hash, run_id) of a resolved config. Deterministic, so a rerun of the same config and seed replaces
    its record and sweeps can skip finished runs."""
    cfg_hash = config_hash(config_dict, NON_SEMANTIC_KEYS)
    return cfg_hash, f"{cfg_hash}-s{seed}"


def finished_record(cfg: BaseRunConfig, run_id: str) -> dict[str, Any] | None:
    """The ok record that makes this run a skip, or None when it must run (none yet, failed, or rerun=true)."""
    if cfg.rerun:
        return None
    record = read_record(Path(cfg.results_dir), cfg.experiment, run_id)
    return record if record is not None and record.get("status") == "ok" else None


def _energy_meter(cfg: BaseRunConfig, output_dir: Path, device: str):
    from sustainml_exp.energy import EnergyConfig, make_energy_meter

    return make_energy_meter(EnergyConfig(**asdict(cfg.energy)), log_dir=output_dir / "energy", device=device)


def run_experiment(cfg: BaseRunConfig, config_dict: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Run one configured experiment and return the record written for it."""
    family = get_family(cfg.experiment)
    output_dir = Path(output_dir)
    cfg_hash, run_id = run_identity(config_dict, cfg.seed)
    done = finished_record(cfg, run_id)
    if done is not None:
        log.info("run %s already has an ok record (%s); skipped (rerun=true runs it again)", run_id,
                 record_paths(Path(cfg.results_dir), cfg.experiment, run_id, None)[0])
        return done
    sha, dirty = git_state()
    versions = library_versions()
    record: dict[str, Any] = {
        "run_id": run_id,
        "experiment": cfg.experiment,
        "dataset": cfg.dataset,
        "method": "",
        "seed": cfg.seed,
        "status": "failed",
        "error": "",
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "wall_s": float("nan"),
        "epochs": 0,
        "epochs_per_s": float("nan"),
        "peak_mem_mb": float("nan"),
        "peak_mem_source": "",
        "n_params": None,
        "energy_kwh": float("nan"),
        "co2_g": float("nan"),
        "energy_backend": cfg.energy.backend,
        "cpu_power_source": "",
        "gpu_power_source": "",
        "device": cfg.device,
        "gpu_name": "",
        "git_sha": sha,
        "git_dirty": dirty,
        "cfg_hash": cfg_hash,
        "torch_version": versions.get("torch", ""),
        **slurm_ids(),
        **cfg.record_fields(),
    }
    t0 = time.perf_counter()
    meter = None
    threads_before = None
    try:
        device = resolve_device(cfg.device)
        record["device"] = device
        if device == "cuda":
            import torch

            record["gpu_name"] = torch.cuda.get_device_name()
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
            make_progress=lambda total, desc: Progress(total, desc, cfg.progress),
        )
        metrics = family.load_run()(cfg, ctx)
        meter.epoch_end()
        record.update(metrics)
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must become a recorded row
        record["status"] = "oom" if _is_oom(exc) else "failed"
        record["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        record.update(getattr(exc, "record_fields", {}))  # what a refused run knew, e.g. its estimated peak
        if not isinstance(exc, MemoryPreflightError):  # the CLI prints a refusal as its one error line
            log.error("run %s %s: %s", record["run_id"], record["status"], record["error"])
    finally:
        if meter is not None:
            report = meter.stop()
            record.update(asdict(report))
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
    record["wall_s"] = time.perf_counter() - t0
    record["versions"] = versions
    record["config"] = config_dict
    write_record(record, record_paths(Path(cfg.results_dir), cfg.experiment, record["run_id"], output_dir))
    return record


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, MemoryPreflightError)):
        return True
    try:
        import torch
    except ImportError:
        return False
    return isinstance(exc, torch.OutOfMemoryError)
