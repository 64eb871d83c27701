"""The one rule for which runs pool into a table cell and what is left out (tables/rows.py), and that every family's
tables follow it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sustainml_exp.registry import get_family
from sustainml_exp.tables.rows import (
    cells,
    dataset_order,
    excluded_note,
    left_out_note,
    matching,
    modal_setting,
    seed_note,
    split_runs,
)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_only_ok_runs_count_and_the_others_are_counted_by_status() -> None:
    frame = _frame([{"status": "ok", "dataset": "a", "method": 1}, {"status": "failed", "dataset": "a", "method": 2},
                    {"status": "oom", "dataset": "b", "method": 3}, {"status": "failed", "dataset": "b", "method": 4}])
    ok, excluded = split_runs(frame)
    assert len(ok) == 1 and ok["method"].tolist() == ["1"]  # label columns as strings
    assert excluded_note(excluded) == ["3 run(s) with status other than ok are excluded (2 failed, 1 oom)."]
    assert excluded_note(excluded.iloc[0:0]) == []
    ok, excluded = split_runs(_frame([{"dataset": "a"}]))  # no status column: nothing counts
    assert ok.empty and len(excluded) == 1


def test_a_cell_pools_runs_that_agree_on_every_knob_across_a_csv_round_trip() -> None:
    rows = _frame([{"k": 50, "lr": 0.01, "seed": 0}, {"k": "50.0", "lr": "0.01", "seed": 1},
                   {"k": 10, "lr": 0.01, "seed": 0}])
    groups = cells(rows, ["k", "lr"])
    assert list(groups) == [(50, 0.01), (10, 0.01)]
    assert groups[(50, 0.01)]["seed"].tolist() == [0, 1]


def test_the_most_common_whole_combination_wins_not_the_most_common_value_per_knob() -> None:
    # Three runs at (k=50, train=pgd_linf) and a k x train sweep of four: k=10 and train=standard are each the
    # most common value of their knob (3 runs), but (50, pgd_linf) is the most common combination.
    rows = _frame([*[{"k": 50, "train": "pgd_linf"}] * 3,
                   {"k": 10, "train": "standard"}, {"k": 10, "train": "standard"}, {"k": 10, "train": "pgd_linf"},
                   {"k": 20, "train": "standard"}])
    chosen_rows, chosen = modal_setting(rows, ["k", "train"], preferred={})
    assert chosen == {"k": 50, "train": "pgd_linf"} and len(chosen_rows) == 3
    assert left_out_note(len(rows) - len(chosen_rows)) == ["4 run(s) at other settings are not included."]


def test_ties_go_to_the_preferred_value_knob_by_knob_then_to_the_smallest() -> None:
    rows = _frame([{"k": 10, "lr": 0.1}, {"k": 50, "lr": 0.1}, {"k": 50, "lr": 0.2}, {"k": 10, "lr": 0.2}])
    assert modal_setting(rows, ["k", "lr"], preferred={"k": 50})[1] == {"k": 50, "lr": 0.1}
    assert modal_setting(rows, ["k", "lr"], preferred={})[1] == {"k": 10, "lr": 0.1}


def test_a_knob_that_does_not_apply_matches_any_value_and_never_decides() -> None:
    # k of the full training set means nothing: recorded as None, it neither votes nor filters the run out.
    rows = _frame([{"method": "full", "k": None, "lr": 0.1}, {"method": "rand", "k": 50, "lr": 0.1},
                   {"method": "mcs", "k": 50, "lr": 0.1}, {"method": "rand", "k": 10, "lr": 0.1}])
    chosen_rows, chosen = modal_setting(rows, ["k", "lr", "unrecorded"], preferred={})
    assert chosen == {"k": 50, "lr": 0.1}
    assert chosen_rows["method"].tolist() == ["full", "rand", "mcs"]
    assert matching(rows, {"k": 10}, skip=["k"]).equals(rows)


def test_dataset_order_and_repeated_seeds() -> None:
    assert dataset_order(["x", "mnist", "b", "cifar10"], ("cifar10", "mnist")) == ["cifar10", "mnist", "b", "x"]
    assert seed_note("Rand", _frame({"seed": [0, 0, 1]})) == ["Rand: 3 runs share 2 seeds."]
    assert seed_note("Rand", _frame({"seed": [0, 1]})) == []


@pytest.mark.parametrize("family", ["gnn_blockquant", "mfc_coreset", "csl_segmentation"])
def test_every_family_notes_its_excluded_runs_the_same_way(family: str, tmp_path: Path) -> None:
    frame = _frame([{"run_id": "a", "family": family, "dataset": "x", "method": "m", "seed": 0, "status": "failed"},
                    {"run_id": "b", "family": family, "dataset": "x", "method": "m", "seed": 1, "status": "oom"}])
    written = get_family(family).load_tables()(frame, [], tmp_path)
    tables = [p for p in written if p.name.startswith("table") and p.suffix == ".md"]
    assert tables
    for table in tables:
        assert "2 run(s) with status other than ok are excluded (1 failed, 1 oom)." in table.read_text(), table.name
