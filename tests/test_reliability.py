"""A bad record, a failed sweep job, a full disk or a signal never cost a user the results already finished.

Most tests share one local multirun under umask 027 (an ok job, two failed ones and one whose record the store
cannot take at the end); tests that change its results work on a copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from cli_helpers import SML_RUN, run_cli
from sustainml_exp.cli import plan_command, run_main
from sustainml_exp.cli_tables import main as tables_main
from sustainml_exp.family import Family
from sustainml_exp.results import RunRecord, load_records, record_paths, write_record
from sustainml_exp.runner import run_identity
from sustainml_exp.sweeps import plan_job, summary

# One thread: on a shared 2-core machine OpenMP's waiting threads double the time of these tiny runs.
QUICK = ("epochs=2", "energy=none", "progress=off", "threads=1")


def _run_id(*overrides: str) -> str:
    (_, typed, cfg), = plan_command(list(overrides)).jobs
    return run_identity(typed, OmegaConf.to_container(cfg, resolve=True))[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SimpleNamespace:
    """Four jobs: synthetic seed 0 ok; synthetic seed 1 ok but its store path is taken by a folder, so the record
    cannot be stored at the end (as on a full disk); flickr seeds 0 and 1 fail (no data here)."""
    tmp = tmp_path_factory.mktemp("sweep")
    results = tmp / "results"
    blocked = results / "runs" / "gnn_blockquant" / f"{_run_id('dataset=synthetic', 'seed=1', *QUICK)}.json"
    blocked.mkdir(parents=True)
    proc = run_cli(SML_RUN, "-m", "dataset=synthetic,flickr", "seed=0,1", *QUICK, f"results_dir={results}",
                   f"data_dir={tmp / 'data'}", cwd=tmp, umask=0o027)
    blocked.rmdir()
    # As stored (NaN as null), so that a record can be written back and compared with what is read.
    records = {(r.dataset, r.seed): json.loads(record_paths(results, r.family, r.run_id, None)[0].read_text())
               for r in load_records(results, "gnn_blockquant")}
    assert sorted(records) == [("flickr", 0), ("flickr", 1), ("synthetic", 0)], proc.stdout[-3000:] + proc.stderr
    return SimpleNamespace(proc=proc, results=results, records=records, blocked=blocked)


def _copy_results(sweep: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sweep.results, tmp_path / "results"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- multirun summary and exit status (item 2) ----------------------------------------------------------------

def test_multirun_ends_with_a_summary_naming_failed_runs_and_exits_1(sweep) -> None:
    assert sweep.proc.returncode == 1, sweep.proc.stderr[-3000:]
    last = sweep.proc.stderr.strip().splitlines()[-1]
    failed = [f"{sweep.blocked.stem} (failed: record not in the results store)",
              *(f"{sweep.records['flickr', seed]['run_id']} (failed)" for seed in (0, 1))]
    assert last.startswith(f"sml-run: 4 job(s): 1 ok, 0 skipped, 3 failed: {', '.join(failed)}; "), last


def test_summary_counts_a_job_an_ok_record_made_a_skip(tmp_path: Path) -> None:
    record = RunRecord(run_id="a-s0", family="gnn_blockquant", status="ok", started_utc="2026-01-01")
    write_record(record, record_paths(tmp_path, "gnn_blockquant", "a-s0", None))
    jobs = [plan_job("a-s0", tmp_path, "gnn_blockquant", skip=True),
            plan_job("b-s0", tmp_path, "gnn_blockquant", skip=False)]
    assert summary(jobs, tmp_path / "sweep") == (
        f"2 job(s): 0 ok, 1 skipped, 1 failed: b-s0 (failed: no record); job folders under {tmp_path / 'sweep'}",
        True)


# --- sweep folders (item 6) and file modes (item 5) -----------------------------------------------------------

def test_sweep_folders_are_unique_to_the_moment_and_the_process(sweep) -> None:
    (folder,) = (sweep.results / "multirun" / "gnn_blockquant").iterdir()
    # Microseconds, then the submitting process's id.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-\d+", folder.name), folder.name
    assert sweep.proc.stderr.strip().endswith(f"job folders under {folder}")


def test_records_csv_and_tables_follow_the_umask(sweep, tmp_path: Path) -> None:
    records = sorted((sweep.results / "runs" / "gnn_blockquant").glob("*.json"))
    assert len(records) == 3 and all(_mode(p) == 0o640 for p in records), [oct(_mode(p)) for p in records]
    results = _copy_results(sweep, tmp_path)
    umask = os.umask(0o027)
    try:
        tables_main(["--results-dir", str(results)])
    finally:
        os.umask(umask)
    written = [results / "gnn_blockquant.csv", *(results / "tables").iterdir()]
    assert len(written) > 4 and all(_mode(p) == 0o640 for p in written), [(p.name, oct(_mode(p))) for p in written]


# --- failures keep everything (items 4, 8, 11) ----------------------------------------------------------------

def _job_folder(root: Path, run_id: str) -> Path:
    (folder,) = [p.parent for p in root.rglob("record.json") if json.loads(p.read_text())["run_id"] == run_id]
    return folder


def test_failed_run_keeps_its_full_traceback_in_its_log_and_output_folder(sweep) -> None:
    folder = _job_folder(sweep.results / "multirun", sweep.records["flickr", 0]["run_id"])
    traceback_text = (folder / "traceback.txt").read_text()
    assert traceback_text.startswith("Traceback (most recent call last):")
    assert "DataMissingError: dataset 'flickr'" in traceback_text
    (log_file,) = folder.glob("*.log")
    assert "Traceback (most recent call last):" in log_file.read_text()
    assert "Traceback" not in sweep.proc.stdout + sweep.proc.stderr  # the console keeps one line per failure
    assert f"(traceback: {folder / 'traceback.txt'})" in sweep.proc.stdout


def test_failed_rerun_keeps_the_earlier_ok_record(sweep, tmp_path: Path) -> None:
    results = _copy_results(sweep, tmp_path)
    failed = sweep.records["flickr", 0]
    store = results / "runs" / "gnn_blockquant" / f"{failed['run_id']}.json"
    earlier = {**failed, "status": "ok", "error": ""}  # as if flickr had been on disk for an earlier run
    store.write_text(json.dumps(earlier))
    proc = run_cli(SML_RUN, "dataset=flickr", *QUICK, "rerun=true", f"results_dir={results}",
                   f"data_dir={tmp_path / 'data'}", cwd=tmp_path)
    assert proc.returncode == 1
    assert json.loads(store.read_text()) == earlier
    kept = _job_folder(results / "outputs", failed["run_id"]) / "record.json"
    assert json.loads(kept.read_text())["status"] == "failed"
    assert f"its earlier ok record {store} is kept" in proc.stdout and f"this run's record: {kept}" in proc.stdout


def test_record_the_store_cannot_take_at_the_end_stays_in_the_output_folder(sweep) -> None:
    kept = _job_folder(sweep.results / "multirun", sweep.blocked.stem) / "record.json"
    assert json.loads(kept.read_text())["status"] == "ok"
    assert (f"run {sweep.blocked.stem}: its record could not be written to {sweep.blocked} (" in sweep.proc.stdout
            and f"it is kept in {kept}: copy it there once the problem is fixed" in sweep.proc.stdout)


def _preflight(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """run_main in this process for a command whose preflight must refuse it: (exit status, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["sml-run", *args])
    with pytest.raises(SystemExit) as exit_info:
        run_main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def _make_read_only(folder: Path) -> None:
    """Read-only even for root (the immutable attribute), else by mode; skips where neither holds."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return
    (folder / "probe").unlink()
    pytest.skip("cannot make a folder read-only here")


def test_unwritable_results_folder_is_refused_before_any_work(monkeypatch, capsys, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code, err = _preflight(monkeypatch, capsys, *QUICK, f"results_dir={not_a_folder}")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"sml-run: error: cannot write records to {not_a_folder}/runs/gnn_blockquant (")

    results = tmp_path / "results"
    runs = results / "runs" / "gnn_blockquant"
    runs.mkdir(parents=True)
    _make_read_only(runs)
    try:
        code, err = _preflight(monkeypatch, capsys, *QUICK, f"results_dir={results}")
    finally:
        subprocess.run(["chattr", "-i", str(runs)], capture_output=True)
        runs.chmod(0o755)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"sml-run: error: cannot write records to {runs} ("), err
    assert sorted(p.name for p in results.iterdir()) == ["runs"]  # no Hydra output folder: nothing started
    assert sorted(tmp_path.iterdir()) == [not_a_folder, results]


# --- bad input that used to pass or give a traceback (item 9) and --shell-completion (item 13) ----------------

@pytest.mark.parametrize(("args", "message"), [
    (("results_dir=",), "results_dir='' is not allowed; allowed: a folder path"),
    (("hydra.job.chdir=true",), "hydra.job.chdir=true is not allowed; allowed: false"),
    (("seed=4294967296",), "seed=4294967296 is out of range; allowed: [0, 4294967295] (every run seeds numpy"),
    (("--shell-completion",), "--shell-completion needs one of install=SHELL, uninstall=SHELL, query=SHELL"),
])
def test_bad_input_is_one_line_before_any_work(monkeypatch, capsys, tmp_path: Path, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    with_results = () if args == ("results_dir=",) else (f"results_dir={tmp_path / 'results'}",)
    code, err = _preflight(monkeypatch, capsys, *QUICK, *with_results, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"sml-run: error: {message}"), err
    assert not list(tmp_path.iterdir())


def test_help_lists_sml_runs_own_flags_and_the_experiments(tmp_path: Path) -> None:
    proc = run_cli(SML_RUN, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    usage = proc.stdout.split("== Configuration groups ==")[0]
    for flag in ("--dry-run", "--detach", "-m, --multirun", "hydra/launcher=slurm", "--cfg job"):
        assert flag in usage, flag
    presets = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))
    assert len(presets) >= 4 and f"{', '.join(presets)} (default: gnn_blockquant)" in usage
    completion = run_cli(SML_RUN, "--shell-completion", "install=bash", cwd=tmp_path)
    assert completion.returncode == 0 and "complete" in completion.stdout, completion.stderr


# --- sml-tables over damaged and misplaced records (items 1, 12) ----------------------------------------------

def _tables(capsys, results: Path, *args: str) -> tuple[int, list[str], list[str]]:
    """sml-tables in this process: (exit status, stdout lines, stderr lines)."""
    try:
        tables_main(["--results-dir", str(results), *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_damaged_records_are_skipped_one_warning_each_and_every_table_is_built(sweep, capsys, tmp_path) -> None:
    results = _copy_results(sweep, tmp_path)
    runs = results / "runs" / "gnn_blockquant"
    good = (runs / f"{sweep.records['synthetic', 0]['run_id']}.json").read_text()
    damaged = {
        "truncated.json": (good[: len(good) // 2].encode(), "not valid JSON ("),
        "empty.json": (b"", "empty file"),
        "latin1.json": ('{"run_id": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text ("),
        "list.json": (b"[1, 2]", "a JSON list, not a record object"),
        "bare.json": (b'{"run_id": "x-s0", "status": "ok"}', "lacks family, dataset, seed, started_utc"),
    }
    for name, (data, _) in damaged.items():
        (runs / name).write_bytes(data)
    code, out, err = _tables(capsys, results)
    assert code == 0, err
    for name, (_, reason) in damaged.items():
        (line,) = [line for line in err if f"skipped {runs / name}: " in line]
        assert line.startswith(f"sml-tables: warning: skipped {runs / name}: {reason}"), line
    assert len(err) == len(damaged)
    assert str(results / "tables" / "table4.md") in out
    merged = pd.read_csv(results / "gnn_blockquant.csv")
    assert sorted(merged["run_id"]) == sorted(r["run_id"] for r in sweep.records.values())

    for name in [p.name for p in runs.iterdir() if p.name not in damaged]:
        (runs / name).unlink()
    code, out, err = _tables(capsys, results)
    assert code == 1 and err[-1] == "sml-tables: error: nothing built: no usable record (see the warnings above)"


def test_records_that_cannot_be_placed_are_named_and_a_missing_family_is_an_error(sweep, capsys, tmp_path) -> None:
    results = _copy_results(sweep, tmp_path)
    runs = results / "runs"
    record = dict(sweep.records["synthetic", 0])
    (runs / "gnn_blockquant" / "no-family.json").write_text(json.dumps({**record, "family": None}))
    (runs / "gnn_blockquant" / "done.json").write_text(json.dumps({**record, "status": "done"}))
    (runs / "csl_segmentation").mkdir()
    (runs / "csl_segmentation" / "gnn.json").write_text(json.dumps(record))
    (runs / "loose.json").write_text(json.dumps(record))
    code, out, err = _tables(capsys, results)
    assert code == 0, err
    assert err == [
        f"sml-tables: warning: skipped {runs / 'loose.json'}: not in a family folder (records go to "
        "runs/<family>/)",
        f"sml-tables: warning: skipped {runs / 'csl_segmentation' / 'gnn.json'}: family='gnn_blockquant': a "
        "record of another family in the csl_segmentation folder",
        f"sml-tables: warning: csl_segmentation: no usable record under {runs / 'csl_segmentation'}; its CSV and "
        "tables were left as they were",
        f"sml-tables: warning: skipped {runs / 'gnn_blockquant' / 'done.json'}: status='done' is not one of ok, "
        "failed, oom",
        f"sml-tables: warning: skipped {runs / 'gnn_blockquant' / 'no-family.json'}: lacks family",
    ]
    assert str(results / "gnn_blockquant.csv") in out

    code, out, err = _tables(capsys, results, "--experiment", "mfc_coreset")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"sml-tables: error: --family mfc_coreset: {runs / 'mfc_coreset'} does not exist")


def test_a_family_whose_tables_raise_keeps_its_csv_and_exits_1(sweep, capsys, tmp_path, monkeypatch) -> None:
    results = _copy_results(sweep, tmp_path)

    def broken_tables(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(Family, "load_tables", lambda self: broken_tables)
    code, out, err = _tables(capsys, results)
    assert code == 1 and out == [str(results / "gnn_blockquant.csv")]
    assert err == [f"sml-tables: warning: gnn_blockquant: tables not built (RuntimeError: boom); "
                   f"{results / 'gnn_blockquant.csv'} was written",
                   "sml-tables: error: the tables of gnn_blockquant failed (see the warnings above); the others were "
                   "built"]


def test_a_family_folder_without_records_yet_gives_empty_tables(capsys, tmp_path: Path) -> None:
    # sml-run creates the folder before the first job ends; sml-tables run meanwhile must not fail.
    (tmp_path / "runs" / "gnn_blockquant").mkdir(parents=True)
    code, out, err = _tables(capsys, tmp_path)
    assert code == 0 and err == [] and str(tmp_path / "gnn_blockquant.csv") in out
