"""Records are written atomically, carry every common column and merge into one CSV row per run_id."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sustainml_exp.results import COMMON_COLUMNS, RunRecord, atomic_write_text, merge_records, write_record


def _record(run_id: str, started: str, acc: float, **extra) -> dict:
    base = {c: "" for c in COMMON_COLUMNS}
    base.update(run_id=run_id, family="gnn_blockquant", started_utc=started, status="ok", seed=0,
                wall_s=1.0, energy_kwh=float("nan"), test_acc=acc, config={"G_R": 64}, **extra)
    return RunRecord.from_json(base)


def test_atomic_write_leaves_no_temp_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_record_needs_its_run_id_family_and_a_run_status() -> None:
    with pytest.raises(ValueError, match="not a run record: no run_id or family"):
        RunRecord.from_json({"status": "ok"})
    with pytest.raises(ValueError, match="status='done' is not a run status; allowed: ok, failed, oom"):
        RunRecord(run_id="a-s0", family="gnn_blockquant", status="done")


def test_a_record_round_trips_through_json(tmp_path: Path) -> None:
    record = RunRecord(run_id="a-s0", family="gnn_blockquant", experiment="gnn_flickr", seed=3, status="ok",
                       versions={"torch": "2.5"}, config={"G_R": 64})
    record.update({"test_acc": 0.5, "epochs": 7, "artifacts": {"stats": [1, 2]}})
    assert (record.epochs, record.values, record.get("test_acc"), record.get("status")) == (
        7, {"test_acc": 0.5}, 0.5, "ok")
    write_record(record, [tmp_path / "a-s0.json"])
    stored = json.loads((tmp_path / "a-s0.json").read_text())
    assert list(stored)[:len(COMMON_COLUMNS)] == list(COMMON_COLUMNS)  # CSV order, then the family's values
    assert stored["wall_s"] is None and stored["artifacts"] == {"stats": [1, 2]}  # NaN as null
    again = RunRecord.from_json(stored)
    assert again.to_json().keys() == record.to_json().keys() and again.artifacts == record.artifacts
    assert again.values == {"test_acc": 0.5} and again.seed == 3 and again.wall_s != again.wall_s  # NaN again


def test_nan_is_stored_as_null_and_merge_dedupes_by_run_id(tmp_path: Path) -> None:
    runs = tmp_path / "runs" / "gnn_blockquant"
    write_record(_record("a-s0", "2026-01-01T00:00:00", 0.5), [runs / "a-s0.json"])
    write_record(_record("b-s0", "2026-01-01T00:00:01", 0.7), [runs / "b-s0.json"])
    # The same run recorded again elsewhere (e.g. copied from a cluster): the newer record wins.
    write_record(_record("a-s0", "2026-01-02T00:00:00", 0.6), [runs / "a-s0-copy.json"])
    assert json.loads((runs / "a-s0.json").read_text())["energy_kwh"] is None
    frame = merge_records(tmp_path, "gnn_blockquant")
    assert list(frame.columns[: len(COMMON_COLUMNS)]) == list(COMMON_COLUMNS)
    assert "config" not in frame.columns
    assert sorted(frame["run_id"]) == ["a-s0", "b-s0"]
    assert frame.set_index("run_id").loc["a-s0", "test_acc"] == 0.6
    on_disk = pd.read_csv(tmp_path / "gnn_blockquant.csv")
    assert len(on_disk) == 2 and on_disk["energy_kwh"].isna().all()


def test_a_record_from_before_the_family_field_loads_into_the_csv_and_the_tables(tmp_path: Path) -> None:
    """Records written before ``family`` existed named the family in ``experiment`` and had no ``family`` key."""
    from sustainml_exp.registry import get_family
    from sustainml_exp.results import load_records

    old = {c: "" for c in COMMON_COLUMNS if c != "family"}
    old.update(run_id="0123456789abcdef-s0", experiment="gnn_blockquant", dataset="synthetic", method="block",
               seed=0, status="ok", started_utc="2026-01-01T00:00:00.000+00:00", wall_s=3.0, epochs=100,
               epochs_per_s=40.0, peak_mem_mb=300.0, quant="block", bits=2, kept_frac=0.125, G_R=64, vm=False,
               test_acc=0.79, val_acc=0.8, act_mem_mb=0.5, train_s=2.5, energy_kwh=None,
               config={"experiment": "gnn_blockquant", "G_R": 64, "seed": 0}, versions={"torch": "2.5"})
    path = tmp_path / "runs" / "gnn_blockquant" / f"{old['run_id']}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old))
    records = load_records(tmp_path, "gnn_blockquant")
    frame = merge_records(tmp_path, "gnn_blockquant", records)
    assert frame.loc[0, "family"] == "gnn_blockquant" and frame.loc[0, "experiment"] == "gnn_blockquant"
    written = get_family("gnn_blockquant").load_tables()(frame, records, tmp_path / "tables")
    table4 = (tmp_path / "tables" / "table4.md").read_text()
    assert tmp_path / "tables" / "table4.md" in written
    assert "| INT2 block G/R=64 " in table4 and "79.00" in table4
