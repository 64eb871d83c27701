"""Columns every result row has, in CSV order; families append their knobs and metrics after these."""

COMMON_COLUMNS: tuple[str, ...] = (
    "run_id",
    "family",  # the experiment family: results/runs/<family>/, <family>.csv
    "experiment",  # the preset it ran from (experiment=gnn_flickr); older records name the family here
    "dataset",
    "method",
    "seed",
    "status",  # one of RUN_STATUSES
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


def upgraded(record: dict) -> dict:
    """``record`` as this version writes it. Records from before the ``family`` field named the family in
    ``experiment`` (then always one of the family's own preset names), so they read the same either way."""
    if "family" not in record and "experiment" in record:
        return {"family": record["experiment"], **record}
    return record
