"""A real Slurm cluster: scripts/local_slurm.sh starts one on this machine, sweeps go through the submitit launcher.

Marked ``slurm`` (run with ``pytest -m slurm``, as root: the script installs packages and starts daemons). The
cluster is stopped after the module, also when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import SML_RUN, SML_TABLES, run_cli
from sustainml_exp.provenance import git_state
from sustainml_exp.results import load_records

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
LOCAL_SLURM = REPO / "scripts" / "local_slurm.sh"
# One CPU per task so both of the machine's CPUs run tasks; small memory so any CI machine can host them.
LAUNCHER = ("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "hydra.launcher.timeout_min=10")
# Four array tasks on the embedded default; the flickr ones fail on the compute node (no data offline).
SWEEP = ("dataset=synthetic,flickr", "seed=0,1", "epochs=3", "energy=none", "progress=log")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (apt-get, munged, slurmctld)")
    try:
        subprocess.run(["bash", str(LOCAL_SLURM), "start"], check=True, timeout=600)
        yield
    finally:
        subprocess.run(["bash", str(LOCAL_SLURM), "stop"], timeout=120)


def _sml(tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_cli(SML_RUN, *args, f"results_dir={tmp / 'results'}", f"data_dir={tmp / 'data'}", cwd=tmp,
                   timeout=timeout)


def _records(tmp: Path) -> dict[tuple[str, int], dict]:
    return {(r.dataset, r.seed): r.to_json() for r in load_records(tmp / "results", "gnn_blockquant")}


def test_sweep_is_one_array_with_one_record_per_task_and_a_rerun_skips_finished_tasks(cluster, tmp_path) -> None:
    sweep = subprocess.Popen([str(SML_RUN), *LAUNCHER, *SWEEP, f"results_dir={tmp_path / 'results'}",
                              f"data_dir={tmp_path / 'data'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    # Merging while tasks are still writing must always succeed.
    merges = 0
    try:
        while sweep.poll() is None:
            if (tmp_path / "results" / "runs").is_dir():
                merged = run_cli(SML_TABLES, "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
                assert merged.returncode == 0, merged.stderr
                merges += 1
            time.sleep(1)
    finally:
        sweep.kill()  # a failed check must not leave sml-run waiting on a cluster that is about to stop
    output = sweep.stdout.read()
    assert sweep.returncode == 1, output[-4000:]

    records = _records(tmp_path)
    failed = ", ".join(f"{records[('flickr', seed)]['run_id']} (failed)" for seed in (0, 1))
    assert output.strip().splitlines()[-1].startswith(f"sml-run: 4 job(s): 2 ok, 0 skipped, 2 failed: {failed}; ")
    assert sorted(records) == [("flickr", 0), ("flickr", 1), ("synthetic", 0), ("synthetic", 1)]
    assert len({r["slurm_job_id"] for r in records.values()}) == 1, "the sweep must be one job array"
    assert records[("synthetic", 0)]["slurm_job_id"].isdigit()
    assert sorted(r["slurm_array_task_id"] for r in records.values()) == ["0", "1", "2", "3"]
    for (dataset, _), record in records.items():
        assert record["git_sha"] == git_state()[0]
        if dataset == "synthetic":
            assert record["status"] == "ok" and record["error"] == "" and record["epochs"] == 3
            assert 0.0 <= record["test_acc"] <= 1.0
        else:
            assert record["status"] == "failed" and record["error"].startswith("DataMissingError: dataset 'flickr'")

    tables = run_cli(SML_TABLES, "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert tables.returncode == 0, tables.stderr
    frame = pd.read_csv(tmp_path / "results" / "gnn_blockquant.csv")
    assert sorted(frame["run_id"]) == sorted(r["run_id"] for r in records.values())
    assert sorted(frame["status"]) == ["failed", "failed", "ok", "ok"]

    rerun = _sml(tmp_path, *LAUNCHER, *SWEEP)
    assert rerun.returncode == 1, rerun.stdout[-4000:] + rerun.stderr[-4000:]
    assert rerun.stderr.strip().splitlines()[-1].startswith(f"sml-run: 4 job(s): 0 ok, 2 skipped, 2 failed: {failed}; ")
    again = _records(tmp_path)
    assert len(again) == 4, "a rerun must replace records, never add any"
    first_job = records[("synthetic", 0)]["slurm_job_id"]
    for key in [("synthetic", 0), ("synthetic", 1)]:
        assert again[key] == records[key], "a finished task must be skipped"
    for key in [("flickr", 0), ("flickr", 1)]:
        assert again[key]["status"] == "failed" and again[key]["slurm_job_id"] != first_job
        assert again[key]["started_utc"] > records[key]["started_utc"]


def test_unknown_partition_is_refused_before_submitting(cluster, tmp_path) -> None:
    proc = _sml(tmp_path, *LAUNCHER, "hydra.launcher.partition=gpu", *SWEEP, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "sml-run: error: hydra.launcher.partition='gpu' is not a partition of this cluster; allowed: debug"]
    assert not (tmp_path / "results").exists()


def _queued_job_ids() -> set[str]:
    listing = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, check=True)
    return {line.split("_")[0] for line in listing.stdout.split()}


def test_bad_sweep_value_fails_at_submission(cluster, tmp_path) -> None:
    # An earlier test's array may still be completing, so the check is "no new job", not "same queue".
    queued_before = _queued_job_ids()
    proc = _sml(tmp_path, *LAUNCHER, "dataset=synthetic", "G_R=8,0", timeout=120)
    assert proc.returncode == 2 and "G_R=0" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _queued_job_ids() <= queued_before
    assert not (tmp_path / "results").exists()


def test_task_at_its_time_limit_is_requeued_then_recorded_failed_once(cluster, tmp_path) -> None:
    # A 1-minute limit with the warning signal 30 s before it: the first attempt is requeued (and writes no
    # record), the second exhausts max_num_timeout=1 and records the timeout as a failed row. About 4 minutes:
    # Slurm holds a requeued job for two minutes before it is eligible again.
    proc = _sml(tmp_path, *LAUNCHER, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
                "hydra.launcher.max_num_timeout=1", "dataset=synthetic", "epochs=1000000", "energy=none",
                "progress=log", timeout=900)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    (record,) = [r.to_json() for r in load_records(tmp_path / "results", "gnn_blockquant")]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"sml-run: 1 job(s): 0 ok, 0 skipped, 1 failed: {record['run_id']} (failed); ")
    assert record["status"] == "failed"
    assert record["error"] == "UncompletedJobError: Job not requeued because: timed-out too many times."
    job = subprocess.run(["scontrol", "show", "job", record["slurm_job_id"]], capture_output=True, text=True)
    assert "Restarts=1" in job.stdout, job.stdout + job.stderr


def _running_tasks(name: str) -> list[str]:
    listing = subprocess.run(["squeue", "--noheader", "--states=RUNNING", f"--name={name}", "--format=%i"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split()


def test_task_cancelled_without_a_record_is_a_failed_job_and_the_summary_waits_for_the_rest(cluster, tmp_path) -> None:
    # Task 0 trains "forever" and is cancelled; task 1 is short. The submitit launcher stops waiting at the task
    # that left no result, so sml-run must wait for the array itself before it counts the records.
    name = f"sml-cancel-{os.getpid()}"
    sweep = subprocess.Popen([str(SML_RUN), *LAUNCHER, f"hydra.launcher.name={name}", "dataset=synthetic",
                              "epochs=1000000,3", "energy=none", "progress=log", f"results_dir={tmp_path / 'results'}"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 300
        while not any(t.endswith("_0") for t in _running_tasks(name)) and time.monotonic() < deadline:
            time.sleep(1)
        (task,) = [t for t in _running_tasks(name) if t.endswith("_0")]
        subprocess.run(["scancel", task], check=True)
        output, _ = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, output[-4000:]
    (record,) = [r.to_json() for r in load_records(tmp_path / "results", "gnn_blockquant")]
    assert record["status"] == "ok" and record["epochs"] == 3
    cancelled = [line for line in output.splitlines() if line.startswith("sml-run: 2 job(s): ")]
    assert cancelled and cancelled[-1].startswith("sml-run: 2 job(s): 1 ok, 0 skipped, 1 failed: "), output[-4000:]
    assert " (failed: no record); job folders under " in cancelled[-1]
