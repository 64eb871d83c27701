"""Sweeps that can be resubmitted: finished runs are skipped, --dry-run lists jobs, Slurm problems fail early.

The scheduler checks run against small stand-in scripts for sbatch/scontrol/sinfo on PATH; the real local
cluster is exercised by tests/slurm (``pytest -m slurm``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli
from sustainml_exp import provenance
from sustainml_exp.results import COMMON_COLUMNS, load_records, merge_records, write_record
from sustainml_exp.slurm import ArrayEnded, scheduler_problem, stop_waiting_when_array_ends, wait_for_array

QUICK = ("dataset=synthetic", "epochs=2", "energy=none", "progress=off")


def _records(results: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in load_records(results, "gnn_blockquant")}


def test_finished_run_is_skipped_and_rerun_true_runs_it_again(sml_run) -> None:
    first = sml_run(*QUICK)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_id, record), = _records(sml_run.results_dir).items()
    assert record["status"] == "ok"

    again = sml_run(*QUICK)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"run {run_id} already has an ok record" in again.stdout + again.stderr
    assert _records(sml_run.results_dir)[run_id]["started_utc"] == record["started_utc"]

    forced = sml_run(*QUICK, "rerun=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    records = _records(sml_run.results_dir)
    assert list(records) == [run_id], "rerun must replace the record, not add one"
    assert records[run_id]["started_utc"] > record["started_utc"]


def test_failed_run_is_not_skipped(sml_run) -> None:
    first = sml_run("dataset=flickr", "energy=none")
    assert first.returncode == 1
    (run_id, record), = _records(sml_run.results_dir).items()
    assert record["status"] == "failed" and "DataMissingError" in record["error"]
    second = sml_run("dataset=flickr", "energy=none")
    assert second.returncode == 1 and "already has an ok record" not in second.stdout + second.stderr
    assert _records(sml_run.results_dir)[run_id]["started_utc"] > record["started_utc"]


def test_dry_run_lists_jobs_marks_finished_ones_and_writes_nothing(sml_run, tmp_path: Path) -> None:
    done = sml_run(*QUICK, "seed=1")
    assert done.returncode == 0, done.stderr[-2000:]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # The Slurm launcher's scheduler checks are skipped: a dry run needs no cluster.
    proc = sml_run("-m", "hydra/launcher=slurm", *QUICK, "seed=0,1,2", "--dry-run",
                   env={"PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("3 job(s) (launcher: slurm), 1 already done") and "nothing submitted" in lines[0]
    (finished_id,) = _records(sml_run.results_dir)
    assert [line.split()[1] for line in lines[1:]] == ["run", "skip", "run"]
    assert lines[2].split()[2] == finished_id and "seed=1" in lines[2]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    forced = sml_run("-m", *QUICK, "seed=0,1", "rerun=true", "--dry-run")
    assert [line.split()[1] for line in forced.stdout.strip().splitlines()[1:]] == ["run", "run"]


def _fake_slurm_bin(tmp_path: Path, *, ping: str, partitions: str) -> dict[str, str]:
    """PATH holding stand-ins for the three Slurm commands the preflight calls (and no other Slurm)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": "echo 'sbatch must not be called by the preflight' >&2; exit 99",
               "scontrol": f"echo '{ping}'", "sinfo": f"printf '{partitions}'"}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}"}


SWEEP = ("-m", "hydra/launcher=slurm", *QUICK, "seed=0,1")


def _assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sml-run: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_slurm_sweep_without_sbatch_fails_before_submitting(sml_run, tmp_path: Path) -> None:
    proc = sml_run(*SWEEP, env={"PATH": str(Path(sys.executable).parent)})
    _assert_one_line_error(proc, "sbatch is not on PATH", "scripts/local_slurm.sh start")
    assert not (tmp_path / "results").exists()


def test_slurm_sweep_with_unreachable_controller_fails_before_submitting(sml_run, tmp_path: Path) -> None:
    env = _fake_slurm_bin(tmp_path, ping="Slurmctld(primary) at head is DOWN", partitions="debug*\\n")
    proc = sml_run(*SWEEP, env=env)
    _assert_one_line_error(proc, "slurmctld is not reachable", "is DOWN")
    assert not (tmp_path / "results").exists()


def test_slurm_sweep_with_unknown_partition_lists_the_cluster_partitions(sml_run, tmp_path: Path) -> None:
    env = _fake_slurm_bin(tmp_path, ping="Slurmctld(primary) at head is UP", partitions="debug*\\nbatch\\n")
    proc = sml_run(*SWEEP, "hydra.launcher.partition=gpu", env=env)
    _assert_one_line_error(proc, "hydra.launcher.partition='gpu'", "allowed: batch, debug")
    assert not (tmp_path / "results").exists()


def test_partition_lists_are_checked_name_by_name(tmp_path: Path, monkeypatch) -> None:
    env = _fake_slurm_bin(tmp_path, ping="Slurmctld(primary) at head is UP", partitions="debug*\\nbatch\\n")
    monkeypatch.setenv("PATH", env["PATH"])
    assert scheduler_problem("batch,debug") is None and scheduler_problem(None) is None
    assert scheduler_problem("debug,gpu") == ("hydra.launcher.partition='debug,gpu' names gpu, which is not a "
                                             "partition of this cluster; allowed: batch, debug")


def test_slurm_sweep_value_that_fails_validation_fails_at_submission(sml_run, tmp_path: Path) -> None:
    env = _fake_slurm_bin(tmp_path, ping="Slurmctld(primary) at head is UP", partitions="debug*\\n")
    proc = sml_run("-m", "hydra/launcher=slurm", *QUICK, "G_R=8,0", env=env)
    _assert_one_line_error(proc, "G_R=0", "allowed")
    assert not (tmp_path / "results").exists()


def _submitted_sweep(tmp_path: Path, monkeypatch, squeue: str) -> Path:
    """A sweep folder with submitit's folder of task 0 of job 12, and a stand-in squeue on PATH."""
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / ".submitit" / "12_0").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\n{squeue}\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return sweep_dir


def test_waiting_for_an_array_stops_once_its_tasks_leave_the_queue(tmp_path: Path, monkeypatch) -> None:
    # squeue lists task 12_1 twice, then nothing: submitit would wait for a killed task's result forever.
    sweep_dir = _submitted_sweep(tmp_path, monkeypatch, f'n=$(cat {tmp_path}/n 2>/dev/null || echo 0); '
                                 f'echo $((n + 1)) > {tmp_path}/n; [ "$n" -lt 2 ] && echo 12_1; exit 0')
    started = time.monotonic()
    with pytest.raises(ArrayEnded):
        with stop_waiting_when_array_ends(sweep_dir, poll_s=0.05):
            time.sleep(30)
    assert time.monotonic() - started < 10
    assert int((tmp_path / "n").read_text()) == 4  # queued, queued, gone, gone


def test_an_array_still_queued_keeps_the_launcher_waiting(tmp_path: Path, monkeypatch) -> None:
    sweep_dir = _submitted_sweep(tmp_path, monkeypatch, "echo 12_1")
    with stop_waiting_when_array_ends(sweep_dir, poll_s=0.05):
        time.sleep(0.5)  # no ArrayEnded


def test_wait_for_array_polls_until_slurm_no_longer_lists_the_jobs(tmp_path: Path, monkeypatch) -> None:
    # Listed twice, then gone for good: squeue refuses ids slurmctld has forgotten (MinJobAge after their end).
    sweep_dir = _submitted_sweep(tmp_path, monkeypatch, f'n=$(cat {tmp_path}/n 2>/dev/null || echo 0); '
                                 f'echo $((n + 1)) > {tmp_path}/n; [ "$n" -lt 2 ] && echo 12_1 && exit 0; '
                                 "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    wait_for_array(sweep_dir, poll_s=0.05)
    assert int((tmp_path / "n").read_text()) == 3


def test_slurm_launcher_needs_a_sweep(sml_run) -> None:
    _assert_one_line_error(sml_run("hydra/launcher=slurm", *QUICK), "add -m")


def test_missing_submitit_plugin_is_one_line(tmp_path: Path) -> None:
    # A None entry in sys.modules makes the plugin unimportable, as if it were not installed.
    code = ("import sys; sys.modules['hydra_plugins.hydra_submitit_launcher'] = None; "
            f"sys.argv = ['sml-run', '-m', 'hydra/launcher=slurm', 'seed=0,1', 'results_dir={tmp_path}/r']; "
            "from sustainml_exp.cli import run_main; run_main()")
    proc = run_cli(Path(sys.executable), "-c", code, cwd=tmp_path)
    _assert_one_line_error(proc, "hydra-submitit-launcher", "pip install hydra-submitit-launcher")
    assert not (tmp_path / "r").exists()


def test_dry_run_and_detach_exclude_each_other(sml_run) -> None:
    _assert_one_line_error(sml_run(*QUICK, "--dry-run", "--detach"), "--dry-run and --detach")


def test_detach_returns_at_once_and_the_run_finishes_in_the_background(sml_run) -> None:
    proc = sml_run(*QUICK, "--detach", timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log_path = Path(proc.stdout.strip().rsplit("tail -f ", 1)[1])
    assert log_path.parent == sml_run.results_dir / "launcher_logs"
    deadline = time.monotonic() + 300
    while not _records(sml_run.results_dir) and time.monotonic() < deadline:
        time.sleep(1)
    (record,) = _records(sml_run.results_dir).values()
    assert record["status"] == "ok", log_path.read_text()[-2000:]


def test_git_sha_falls_back_to_the_one_exported_at_submit_time(monkeypatch) -> None:
    monkeypatch.delenv(provenance.SUBMIT_SHA_ENV, raising=False)
    monkeypatch.delenv(provenance.SUBMIT_DIRTY_ENV, raising=False)
    checkout = provenance.git_state()
    provenance.export_submit_git_state()
    assert os.environ[provenance.SUBMIT_SHA_ENV] == checkout[0]
    # A compute node without a checkout: git answers nothing there.
    monkeypatch.setattr(provenance, "_git", lambda *args: None)
    assert provenance.git_state() == checkout
    monkeypatch.delenv(provenance.SUBMIT_SHA_ENV)
    assert provenance.git_state() == ("unknown", None)


def test_merge_while_tasks_are_writing_sees_only_whole_records(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "gnn_blockquant"

    def write_many() -> None:
        for i in range(150):
            record = {**{c: "" for c in COMMON_COLUMNS}, "run_id": f"r{i:03d}", "experiment": "gnn_blockquant",
                      "status": "ok", "seed": 0, "started_utc": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}",
                      "payload": "x" * 20000}
            write_record(record, [run_dir / f"r{i:03d}.json"])

    writer = threading.Thread(target=write_many)
    writer.start()
    counts = []
    while writer.is_alive():
        counts.append(len(merge_records(tmp_path, "gnn_blockquant")))  # raises on a half-written record
    writer.join()
    counts.append(len(merge_records(tmp_path, "gnn_blockquant")))
    assert counts == sorted(counts) and counts[-1] == 150 and len(counts) > 1


REPRODUCE = Path(__file__).resolve().parents[1] / "scripts" / "reproduce"


def _reproduce(script: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(["bash", str(REPRODUCE / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PATH": path, "PYTHONWARNINGS": "ignore", **env})


def _listed_jobs(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.startswith("  #")]


def test_table4_dry_run_lists_the_papers_full_sweep_on_slurm(tmp_path: Path) -> None:
    proc = _reproduce("table4.sh", "--dry-run", "energy=none", cwd=tmp_path, LAUNCHER="slurm",
                      RESULTS_DIR=str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _listed_jobs(proc.stdout)
    # arxiv: FP32, EXACT +-VM, six G/R, lean; Flickr: FP32, EXACT, G/R=64; ten seeds each.
    assert len(jobs) == (1 + 2 + 6 + 1 + 3) * 10
    assert proc.stdout.count("(launcher: slurm)") == 7 and proc.stdout.count("nothing submitted") == 7
    assert sum("dataset=ogbn-arxiv" in j and "epochs=500" in j for j in jobs) == 100
    assert sum("dataset=flickr" in j and "epochs=400" in j for j in jobs) == 30
    assert not list(tmp_path.iterdir())


def test_table5_runs_then_table4_skips_the_runs_they_share(tmp_path: Path) -> None:
    quick = {"DATASET": "synthetic", "SEEDS": "0", "EPOCHS": "2", "DEVICE": "cpu", "PROTOCOLS": "arxiv",
             "RESULTS_DIR": str(tmp_path / "results")}
    proc = _reproduce("table5.sh", "energy=none", "progress=off", cwd=tmp_path, **quick)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "tables" / "table5.md").is_file()
    planned = _reproduce("table4.sh", "--dry-run", "energy=none", "progress=off", cwd=tmp_path, **quick)
    assert planned.returncode == 0, planned.stderr[-3000:]
    marks = {tuple(j[3:]): j[1] for j in _listed_jobs(planned.stdout)}
    assert len(marks) == 10
    assert sorted(k for k, mark in marks.items() if mark == "skip") == sorted(
        k for k in marks if "quant=exact" in k)


def test_reproduce_script_runs_every_sweep_builds_the_tables_then_exits_1_when_a_job_failed(tmp_path: Path) -> None:
    # Neither dataset is on disk here: every job of both sweeps fails at once; the second sweep still runs.
    results = tmp_path / "results"
    proc = _reproduce("table5.sh", "energy=none", "progress=off", cwd=tmp_path, ARXIV_DATASET="ogbn-arxiv",
                      FLICKR_DATASET="flickr", SEEDS="0", EPOCHS="2", DEVICE="cpu", RESULTS_DIR=str(results),
                      DATA_DIR=str(tmp_path / "data"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    records = load_records(results, "gnn_blockquant")
    assert sorted((r["dataset"], r["status"]) for r in records) == [
        ("flickr", "failed"), ("ogbn-arxiv", "failed"), ("ogbn-arxiv", "failed")]
    assert (results / "tables" / "table5.md").is_file()
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "table5.sh: sweep(s) with failed jobs: arxiv-exact flickr-exact (summaries above); ")


def test_reproduce_script_refuses_an_unknown_launcher(tmp_path: Path) -> None:
    proc = _reproduce("table4.sh", cwd=tmp_path, LAUNCHER="pbs")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "table4.sh: LAUNCHER='pbs' is not allowed; allowed: local, slurm"


def test_table2_and_table3_dry_runs_list_the_papers_segmentation_sweeps(tmp_path: Path) -> None:
    results = {"RESULTS_DIR": str(tmp_path / "results")}
    table2 = _reproduce("table2.sh", "--dry-run", cwd=tmp_path, LAUNCHER="slurm", **results)
    assert table2.returncode == 0, table2.stderr[-3000:]
    jobs = _listed_jobs(table2.stdout)
    # MoNuSeg, 3 seeds: 5 patch counts at P=50, then 4 more patch sizes at 10 patches.
    assert len(jobs) == (5 + 4) * 3 and all("dataset=monuseg" in j for j in jobs)
    table3 = _reproduce("table3.sh", "--dry-run", cwd=tmp_path, **results)
    assert table3.returncode == 0, table3.stderr[-3000:]
    jobs = _listed_jobs(table3.stdout)
    # MoNuSeg and CoNSeP, 10 seeds: the method, the threshold and the supervised baselines.
    assert len(jobs) == 2 * 3 * 10
    assert sum("method=csl" in j and "dataset=consep" in j for j in jobs) == 10
    # The deliverable's protocol: CE on CoNSeP, MSE on MoNuSeg, selection on the training images' labels.
    assert all("similarity=ce" in j for j in jobs if "method=csl" in j and "dataset=consep" in j)
    assert all("similarity=mse" in j for j in jobs if "method=csl" in j and "dataset=monuseg" in j)
    assert all("selection=train_labels" in j for j in jobs)
    assert not list(tmp_path.iterdir())


def test_segmentation_script_refuses_an_unknown_dataset(tmp_path: Path) -> None:
    proc = _reproduce("table3.sh", cwd=tmp_path, DATASETS="monuseg kumar")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("table3.sh: unknown dataset 'kumar' in DATASETS; allowed: monuseg, consep, "
                                   "synthetic_nuclei")


def test_table1_and_figure_dry_runs_list_the_papers_coreset_sweeps(tmp_path: Path) -> None:
    results = {"RESULTS_DIR": str(tmp_path / "results")}
    table1 = _reproduce("table1.sh", "--dry-run", cwd=tmp_path, LAUNCHER="slurm", **results)
    assert table1.returncode == 0, table1.stderr[-3000:]
    jobs = _listed_jobs(table1.stdout)
    # Five datasets x (Raw + the paper's eight methods) x 3 seeds, ResNet18, k = 50, PGD-linf training.
    assert len(jobs) == 5 * 9 * 3
    assert all("model=resnet18" in j and "k=50" in j and "train=pgd_linf" in j for j in jobs)
    assert sum("dataset=tinyimagenet" in j and "method=mcs" in j for j in jobs) == 3
    figure3 = _reproduce("figure3.sh", "--dry-run", cwd=tmp_path, **results)
    assert figure3.returncode == 0, figure3.stderr[-3000:]
    jobs = _listed_jobs(figure3.stdout)
    # MCS, Rand and DM at six k, three training modes, 3 seeds; the full set and DM at k = 5000 under each mode.
    assert len(jobs) == 3 * 6 * 3 * 3 + 3 * 3 + 3 * 3
    assert all("dataset=mnist" in j and "model=mlp" in j for j in jobs)
    # MCS trains with the generalized adversarial loss under both adversarial modes, plain under standard.
    mcs = [j for j in jobs if "method=mcs" in j]
    assert len(mcs) == 6 * 3 * 3
    assert all(("generalized=True" in j and "weighted=True" in j) == ("train=standard" not in j) for j in mcs)
    assert sum("method=dm" in j and "k=5000" in j for j in jobs) == 3 * 3
    assert not list(tmp_path.iterdir())


def test_coreset_script_refuses_an_unknown_dataset(tmp_path: Path) -> None:
    proc = _reproduce("table1.sh", cwd=tmp_path, DATASETS="mnist imagenet")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("table1.sh: unknown dataset 'imagenet' in DATASETS; allowed: digits, mnist, "
                                   "fashion_mnist, cifar10, cifar100, svhn, tinyimagenet")
