"""toy_family's one table: final MSE per optimizer and learning rate, mean ± std over seeds, with the runs' cost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sustainml_exp.results import RunRecord
from sustainml_exp.tables.cost import RUN_COSTS, cost_cells, cost_headers, cost_note
from sustainml_exp.tables.render import Section, mean_std, numeric, write_table_files
from sustainml_exp.tables.rows import cells, dataset_order, excluded_note, seed_note, split_runs

COLUMNS = ("Optimizer", "lr", "n", "MSE", *cost_headers(RUN_COSTS))
KNOBS = ("method", "lr", "n_points", "noise", "epochs")  # a row pools the seeds of one setting of these


def write_tables(frame: pd.DataFrame, records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    ok, not_ok = split_runs(frame)
    sections = []
    for dataset in dataset_order(ok["dataset"], ()) if not ok.empty else []:
        rows, notes = [], []
        for setting, runs in cells(ok[ok["dataset"] == dataset], KNOBS).items():
            method, lr = setting[0], setting[1]
            rows.append([str(method), str(lr), str(len(runs)), mean_std(numeric(runs, "mse"), 4),
                         *cost_cells(runs, RUN_COSTS)])
            notes += seed_note(f"{method} lr={lr}", runs)
        sections.append(Section(dataset, pd.DataFrame(rows, columns=list(COLUMNS)), notes))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_table_files(Path(out_dir) / "toy_table", "Toy: fitting a line", sections, [cost_note(RUN_COSTS)],
                             columns=COLUMNS, lead_columns=2, paper_group="Paper", paper_columns=(),
                             empty_message="No toy_family runs with status ok were recorded.",
                             excluded=excluded_note(not_ok))
