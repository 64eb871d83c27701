"""Columns every result row has, in CSV order; families append their knobs and metrics after these."""

COMMON_COLUMNS: tuple[str, ...] = (
    "run_id",
    "experiment",
    "dataset",
    "method",
    "seed",
    "status",  # ok | failed | oom
    "error",
    "started_utc",
    "wall_s",
    "epochs",
    "epochs_per_s",
    "peak_mem_mb",
    "peak_mem_source",
    "n_params",
    "energy_kwh",
    "co2_g",
    "energy_backend",
    "cpu_power_source",
    "gpu_power_source",
    "device",
    "gpu_name",
    "git_sha",
    "git_dirty",
    "cfg_hash",
    "torch_version",
    "slurm_job_id",
    "slurm_array_task_id",
)

RUN_STATUSES = ("ok", "failed", "oom")

# What sml-tables needs to place a record (which run, experiment, table row and seed, which copy is newest), with
# the type each must have. A record lacking one is skipped with a warning; other columns may be missing (empty cells).
PLACEMENT_TYPES: dict[str, type] = {
    "run_id": str,
    "experiment": str,
    "dataset": str,
    "seed": int,
    "status": str,
    "started_utc": str,
}
