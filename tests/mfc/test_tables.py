"""Table 1 and the accuracy-vs-k figures from a small fake result frame in the mfc_coreset row format."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from sustainml_exp.families.mfc_coreset.config import EPS_LINF, eps_l2_from_linf, input_dim
from sustainml_exp.families.mfc_coreset.tables import PAPER_TABLE1, write_tables
from sustainml_exp.results.columns import COMMON_COLUMNS

NAN = float("nan")
# MNIST, Table 1 setting (ResNet18, k = 50, PGD-linf training): (std_acc, rob_acc_aa) per seed.
MNIST_RAND = ((0.95, 0.90), (0.96, 0.93), (0.94, 0.91))
MNIST_MCS = ((0.97, 0.92), (0.96, 0.93), (0.95, 0.94))
MNIST_FULL = ((0.99, 0.95), (0.98, 0.96))
MNIST_MCS_WEIGHTED = ((0.80, 0.70), (0.82, 0.74))
FIGURE_KS = (50, 100, 200)
COSTS = ["Select (s)", "Train (s)", "Wall (s)", "Energy (kWh)", "CO2 (g)"]


def _row(dataset: str, method: str, seed: int, *, k: int = 50, model: str = "resnet18", train: str = "pgd_linf",
         norm: str = "linf", weighted: bool = False, generalized: bool = False, epochs: int = 20,
         std: float = 0.5, aa: float = NAN, linf: float = NAN, l2: float = NAN, status: str = "ok") -> dict[str, Any]:
    eps_linf = EPS_LINF[dataset]
    eps_l2 = eps_l2_from_linf(eps_linf, input_dim(dataset))
    ok = status == "ok"
    return {
        "run_id": f"{dataset}-{method}-{k}-{model}-{train}-{weighted}-{epochs}-{seed}-{status}",
        "experiment": "mfc_coreset", "dataset": dataset, "method": method, "seed": seed, "status": status,
        "error": "" if ok else "RuntimeError: boom", "started_utc": "2025-01-01T00:00:00Z", "wall_s": 12.0 + seed,
        "epochs": epochs, "k": k, "model": model, "train": train, "norm": norm,
        "eps": eps_linf if norm == "linf" else eps_l2, "eps_linf": eps_linf, "eps_l2": eps_l2,
        "weighted": weighted, "generalized": generalized, "eta": 1.5 if method == "mcs" else NAN,
        "select_s": 0.1 * (seed + 1), "energy_kwh": 1e-4 * (seed + 1), "co2_g": 0.05 * (seed + 1),
        "std_acc": std if ok else NAN, "rob_acc_pgd_linf": linf if ok else NAN,
        "rob_acc_pgd_l2": l2 if ok else NAN, "rob_acc_aa": aa if ok else NAN,
        "rob_acc_apgd_ce": aa if ok else NAN, "rob_acc_apgd_dlr": aa if ok else NAN,
        "n_selected": 10 * k, "n_train_full": 60000, "mcs_gap": 0.0 if method == "mcs" else NAN,
        "mcs_status": "optimal" if method == "mcs" else "", "mcs_k_greedy": k if method == "mcs" else NAN,
        "pgd_steps": 20, "aa_steps": 100, "aa_restarts": 5, "train_s": 10.0 + seed, "epochs_per_s": 2.0,
        "n_params": 11_000_000,
        "condense_protocol": ("short" if dataset == "digits" else "published") if method in ("dm", "gm", "tm") else "",
    }


def _figure_accuracy(method: str, k: int, train: str, seed: int) -> tuple[float, float, float]:
    """(test, linf-robust, l2-robust) of a fake figure run: grows with k, robust lower under standard training."""
    base = {"mcs": 0.60, "rand": 0.55, "dm": 0.65, "full": 0.90}[method] + k / 2000 + 0.01 * seed
    robust = 0.3 if train == "standard" else 0.6
    return base, base * robust, base * robust + 0.05


def _fake_frame() -> pd.DataFrame:
    rows = []
    for method, values in (("rand", MNIST_RAND), ("mcs", MNIST_MCS), ("full", MNIST_FULL)):
        # full records whatever k the sweep had: it must not matter.
        rows += [_row("mnist", method, s, k=500 if method == "full" else 50, std=a, aa=r, linf=r + 0.02)
                 for s, (a, r) in enumerate(values)]
    rows.append(_row("mnist", "dm", 0, std=0.965, aa=0.91))
    rows += [_row("mnist", "mcs", s, weighted=True, std=a, aa=r) for s, (a, r) in enumerate(MNIST_MCS_WEIGHTED)]
    # Off-setting (fewer epochs): never pooled with the Table 1 rows although the method and k match.
    rows += [_row("mnist", "rand", s, epochs=5, std=0.10, aa=0.05) for s in (0, 1)]
    # Failed: would be the best Rand run if failed rows counted.
    rows.append(_row("mnist", "rand", 7, status="failed"))
    # Figure 3 runs (MLP; no pgd_l2 panel): 6 per (k, training mode), more than any one Table 1 method has.
    for train in ("standard", "pgd_linf"):
        for method in ("mcs", "rand", "dm"):
            for k in FIGURE_KS:
                for seed in (0, 1):
                    test, linf, l2 = _figure_accuracy(method, k, train, seed)
                    rows.append(_row("mnist", method, seed, k=k, model="mlp", train=train, std=test, linf=linf,
                                     l2=l2))
        for seed in (0, 1):
            test, linf, l2 = _figure_accuracy("full", 0, train, seed)
            rows.append(_row("mnist", "full", seed, k=50, model="mlp", train=train, std=test, linf=linf, l2=l2))
    rows.append(_row("mnist", "rand", 0, k=100, model="mlp", epochs=5, std=0.01, linf=0.01, l2=0.01))
    rows.append(_row("mnist", "mcs", 9, k=100, model="mlp", status="oom"))
    # CIFAR10: no AutoAttack (ROB falls back to PGD-linf); Figure 4 runs at the paper's reported k.
    rows += [_row("cifar10", "rand", s, std=a, linf=r) for s, (a, r) in enumerate(((0.30, 0.08), (0.34, 0.10)))]
    rows.append(_row("cifar10", "dm", 0, k=4000, model="convnet", std=0.70, linf=0.12))
    rows.append(_row("cifar10", "full", 0, k=50, model="convnet", std=0.66, linf=0.35))
    # Embedded digits: all three training modes, k = 5 and 10.
    for train in ("standard", "pgd_linf", "pgd_l2"):
        for k in (5, 10):
            rows.append(_row("digits", "mcs", 0, k=k, model="mlp", train=train, std=0.8 + k / 100, linf=0.5,
                             l2=0.6))
    rows.append(_row("digits", "tm", 0, k=5, model="mlp", std=0.7, linf=0.4, l2=0.5))
    return pd.DataFrame(rows)


def _table_rows(markdown: str, section: str) -> list[list[str]]:
    """Cells of the pipe-table rows under the '## <section>' heading (header row included)."""
    block = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def _section_notes(markdown: str, section: str) -> str:
    """The text under '## <section>' up to the next section or the table's general notes."""
    return markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].split("\nNotes:\n", 1)[0]


def _cell(values: list[float]) -> str:
    """Hand-computed mean ± sample std in %."""
    percent = 100 * np.asarray(values)
    return f"{percent.mean():.2f} ± {percent.std(ddof=1):.2f}"


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mfc_tables")
    written = write_tables(_fake_frame(), [], out)
    assert [p.name for p in written] == [
        "table1.md", "table1.tex", "figure3.png", "figure3.md", "figure3.tex", "figure4.png", "figure4.md",
        "figure4.tex", "figure_k_mnist_resnet18.png", "figure_k_mnist_resnet18.md", "figure_k_mnist_resnet18.tex",
        "figure_k_cifar10_resnet18.png", "figure_k_cifar10_resnet18.md", "figure_k_cifar10_resnet18.tex",
        "figure_k_digits_mlp.png", "figure_k_digits_mlp.md", "figure_k_digits_mlp.tex"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    return out


def test_table1_mean_std_and_paper_columns(tables_dir: Path) -> None:
    md = (tables_dir / "table1.md").read_text()
    assert md.index("## mnist") < md.index("## cifar10") < md.index("## digits")
    rows = _table_rows(md, "mnist")
    assert rows[0] == ["Method", "n", "STD (%)", "ROB (%)", *COSTS, "D3.2 / paper STD (%)", "D3.2 / paper ROB (%)"]
    by_label = {r[0]: r[1:] for r in rows[1:]}
    # Seeds 0, 1, 2: select 0.1 / 0.2 / 0.3 s, train 10 / 11 / 12 s, wall 12 / 13 / 14 s, energy 1, 2, 3 e-4 kWh,
    # CO2 0.05 / 0.10 / 0.15 g.
    assert by_label["Rand"][3:8] == ["0.200 ± 0.100", "11.0 ± 1.0", "13.0 ± 1.0", "2.00e-04 ± 1.0e-04",
                                     "0.100 ± 0.050"]
    by_label = {label: cells[:3] + cells[8:] for label, cells in by_label.items()}  # quality and paper cells
    assert list(by_label) == ["Raw (full)", "Rand", "MCS", "MCS (weighted=True, generalized=False)", "Craig", "GradM",
                              "SubMod", "DM", "GM", "TM"]
    assert _cell([0.95, 0.96, 0.94]) == "95.00 ± 1.00"
    assert by_label["Rand"] == ["3", "95.00 ± 1.00", _cell([0.90, 0.93, 0.91]), "95.15 ± 0.14", "92.50 ± 0.37"]
    assert by_label["MCS"] == ["3", _cell([0.97, 0.96, 0.95]), _cell([0.92, 0.93, 0.94]), "96.42 ± 0.21",
                               "92.83 ± 0.07"]
    assert by_label["MCS (weighted=True, generalized=False)"] == ["2", _cell([0.80, 0.82]), _cell([0.70, 0.74]),
                                                                   "–", "–"]
    assert by_label["Raw (full)"] == ["2", _cell([0.99, 0.98]), _cell([0.95, 0.96]), "–", "–"]
    assert by_label["DM"] == ["1", "96.50", "91.00", "96.70 ± 0.09", "91.20 ± 0.27"]  # one run: no ± std
    assert by_label["Craig"] == ["0", "–", "–", "87.02 ± 0.81", "72.45 ± 1.11"]
    for label, method in (("GradM", "gradmatch"), ("SubMod", "submod"), ("GM", "gm"), ("TM", "tm")):
        assert by_label[label][3:] == [f"{m:.2f} ± {s:.2f}" for m, s in PAPER_TABLE1["mnist"][method]]
    # Paper columns hold the deliverable's entries and nothing for datasets it does not report.
    cifar = {r[0]: r[1:] for r in _table_rows(md, "cifar10")[1:]}
    assert cifar["SubMod"][-2:] == ["38.21 ± 0.91", "9.14 ± 0.26"] and cifar["Raw (full)"][-2:] == ["–", "–"]
    assert cifar["Rand"][3:8] == ["0.150 ± 0.071", "10.5 ± 0.7", "12.5 ± 0.7", "1.50e-04 ± 7.1e-05",
                                  "0.0750 ± 0.0354"]
    digits = {r[0]: r[1:] for r in _table_rows(md, "digits")[1:]}
    assert all(cells[-2:] == ["–", "–"] for cells in digits.values())
    # The digits' short condensation protocol is named in the row; MNIST's published one is not.
    assert digits["TM [short protocol]"][:3] == ["1", "70.00", "40.00"] and "DM" in digits  # DM: no runs, no tag
    assert "TM" in by_label and "'short' is the embedded digits' (DM 100, GM 1, TM 20 iterations" in md
    assert "Table 1 has no digits results" in _section_notes(md, "digits")
    tex = (tables_dir / "table1.tex").read_text()
    assert r"\multicolumn{2}{c}{D3.2 / paper}" in tex and r"95.00 $\pm$ 1.00" in tex and r"\textbf{mnist}" in tex


def test_table1_modal_setting_excludes_other_runs(tables_dir: Path) -> None:
    md = (tables_dir / "table1.md").read_text()
    notes = _section_notes(md, "mnist")
    assert "Setting: k=50, model=resnet18, train=pgd_linf, norm=linf, eps_linf=0.1, eps_l2=1.355, epochs=20" in notes
    # The 2 epochs=5 runs, 36 + 4 MLP figure runs and the off-setting MLP run stay out; the failed run is no row.
    assert "43 run(s) at other settings (other k, model, training mode, ...) are not included." in notes
    assert "2 run(s) with status other than ok are excluded (1 failed, 1 oom)." in md
    # CIFAR10 has no aa results: PGD-linf of the section's norm, said so.
    cifar = {r[0]: r[1:] for r in _table_rows(md, "cifar10")[1:]}
    assert cifar["Rand"][:3] == ["2", _cell([0.30, 0.34]), _cell([0.08, 0.10])]
    assert "ROB is PGD-linf (rob_acc_pgd_linf)" in _section_notes(md, "cifar10")
    assert "ROB is PGD" not in _section_notes(md, "mnist")
    # digits: one run per adversarial setting, a tie broken toward the paper's PGD-linf; the standard-trained runs
    # never count; the note names how the setting differs from the paper's.
    digits = _section_notes(md, "digits")
    assert "Setting: k=5, model=mlp, train=pgd_linf" in digits
    assert "Differs from the paper's Table 1 setting: k=5 (paper 50), model=mlp (paper resnet18)." in digits
    assert "5 run(s) at other settings" in digits


def _mnist_frame() -> pd.DataFrame:
    """The MNIST rows alone: two figures to draw instead of five."""
    frame = _fake_frame()
    return frame[frame["dataset"] == "mnist"].reset_index(drop=True)


def test_csv_round_trip_gives_the_same_table(tables_dir: Path, tmp_path: Path) -> None:
    # A CSV round trip turns booleans, 8/255 and integer k into other types: the knob values must still match.
    buffer = io.StringIO()
    _mnist_frame().to_csv(buffer, index=False)
    buffer.seek(0)
    write_tables(pd.read_csv(buffer), [], tmp_path)
    assert _section_notes((tmp_path / "table1.md").read_text(), "mnist") == \
        _section_notes((tables_dir / "table1.md").read_text(), "mnist")
    assert (tmp_path / "figure3.md").read_text() == (tables_dir / "figure3.md").read_text()


def test_figure3_panels_and_points(tables_dir: Path) -> None:
    md = (tables_dir / "figure3.md").read_text()
    assert "![Figure 3: accuracy vs k, MNIST, MLP](figure3.png)" in md
    assert [line for line in md.splitlines() if line.startswith("## ")] == ["## train = standard",
                                                                           "## train = pgd_linf"]
    assert "No runs with train = pgd_l2 (empty panel)." in md
    assert "1 run(s) with status other than ok are excluded (1 oom)." in md  # this figure's runs only
    rows = _table_rows(md, "train = pgd_linf")
    assert rows[0] == ["Method", "k", "n", "Test (%)", "Linf-robust (%)", "L2-robust (%)", *COSTS]
    rows = [row[:6] for row in rows]
    assert [(r[0], r[1]) for r in rows[1:]] == [(m, str(k)) for m in ("MCS", "Rand", "DM") for k in FIGURE_KS] + [
        ("Raw (full)", "full")]
    runs = [_figure_accuracy("mcs", 100, "pgd_linf", seed) for seed in (0, 1)]
    expected = [_cell([r[i] for r in runs]) for i in range(3)]
    assert rows[2] == ["MCS", "100", "2", *expected]
    # The epochs=5 Rand run at k=100 is excluded: two runs remain.
    assert rows[5][:3] == ["Rand", "100", "2"]
    assert "1 run(s) at other settings are not included." in _section_notes(md, "train = pgd_linf")
    standard = {(r[0], r[1]): r[2:6] for r in _table_rows(md, "train = standard")[1:]}
    full = [_figure_accuracy("full", 0, "standard", seed) for seed in (0, 1)]
    assert standard[("Raw (full)", "full")] == ["2", *(_cell([r[i] for r in full]) for i in range(3))]
    png = matplotlib.image.imread(tables_dir / "figure3.png")
    assert png.shape[1] > 2.5 * png.shape[0]  # three panels side by side
    assert png[..., :3].std() > 0.05  # something drawn
    tex = (tables_dir / "figure3.tex").read_text()
    assert r"\includegraphics[width=\linewidth]{figure3.png}" in tex and r"train = pgd\_linf" in tex


def test_figure4_reports_the_paper_point_and_ours(tables_dir: Path) -> None:
    md = (tables_dir / "figure4.md").read_text()
    assert "DM with k = 4000 reaches 68.86 % test vs 64.59 % with the full data, but 12.98 % robust vs 36.21 %" in md
    assert "This reproduction: DM k = 4000 70.00 % test, 12.00 % linf-robust; full 66.00 % test, 35.00 %" in md
    rows = {(r[0], r[1]): r[2:] for r in _table_rows(md, "train = pgd_linf")[1:]}
    assert rows[("DM", "4000")][:4] == ["1", "70.00", "12.00", "–"]  # no l2 result: a dash, not a crash
    assert rows[("DM", "4000")][4:] == ["0.100", "10.0", "12.0", "1.00e-04", "0.0500"]  # one run: no ± std
    assert "No runs with train = standard, pgd_l2 (empty panels)." in md
    assert "status other than ok" not in md  # the failed runs are MNIST's


def test_extra_dataset_figure_has_three_panels(tables_dir: Path) -> None:
    md = (tables_dir / "figure_k_digits_mlp.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## train = standard", "## train = pgd_linf", "## train = pgd_l2"]
    assert [r[:3] for r in _table_rows(md, "train = pgd_l2")[1:]] == [["MCS", "5", "1"], ["MCS", "10", "1"]]
    assert "empty panel" not in md


def test_missing_columns_do_not_crash(tmp_path: Path) -> None:
    frame = _mnist_frame().drop(columns=["rob_acc_aa", "rob_acc_pgd_l2", "weighted", "generalized", "aa_steps"])
    write_tables(frame, [], tmp_path)
    md = (tmp_path / "table1.md").read_text()
    rand = {r[0]: r[1:] for r in _table_rows(md, "mnist")[1:]}["Rand"]
    # Without the weighted column, the weighted MCS runs cannot be told apart and join MCS; Rand is unchanged.
    assert rand[:2] == ["3", "95.00 ± 1.00"]
    assert rand[2] == _cell([0.92, 0.95, 0.93])  # PGD-linf fallback
    assert "ROB is PGD-linf" in md
    pgd = _table_rows((tmp_path / "figure3.md").read_text(), "train = pgd_linf")
    assert pgd[1][5] == "–"


def test_empty_and_all_failed_frames_write_messages(tmp_path: Path) -> None:
    written = write_tables(pd.DataFrame(columns=list(COMMON_COLUMNS)), [], tmp_path / "empty")
    assert [p.name for p in written] == ["table1.md", "table1.tex", "figure3.md", "figure3.tex", "figure4.md",
                                         "figure4.tex"]
    assert "Table 1 has nothing to show" in (tmp_path / "empty" / "table1.md").read_text()
    assert "No mnist runs with model mlp" in (tmp_path / "empty" / "figure3.tex").read_text()
    assert not (tmp_path / "empty" / "figure3.png").exists()
    failed = pd.DataFrame([_row("mnist", "rand", 0, status="failed"), _row("mnist", "mcs", 0, status="oom")])
    write_tables(failed, [], tmp_path / "failed")
    text = (tmp_path / "failed" / "table1.md").read_text()
    assert "nothing to show" in text and "2 run(s) with status other than ok are excluded (1 failed, 1 oom)." in text


def test_table1_states_the_mcs_covering_status_and_gap_per_class(tmp_path: Path) -> None:
    rows = [_row("mnist", "rand", 0)]
    for seed, (status, gaps) in enumerate((("optimal", "0.0000 0.0100 0.0000"), ("feasible", "0.0200 0.0000 0.0300"))):
        rows.append({**_row("mnist", "mcs", seed), "mcs_status": status, "mcs_class_gaps": gaps,
                     "mcs_gap": max(float(g) for g in gaps.split())})
    write_tables(pd.DataFrame(rows), [], tmp_path)
    table1 = (tmp_path / "table1.md").read_text()
    # The worst status of the two runs, and per class the larger of their gaps, in %.
    assert ("MCS covering: status feasible; certified gap of eta (eta - proven lower bound) / eta per class "
            "2, 1, 3 % (largest over the 2 runs).") in table1
    rows = [{**row, "mcs_class_gaps": NAN} for row in rows]  # records written before the per-class gaps
    write_tables(pd.DataFrame(rows), [], tmp_path)
    assert "status feasible; certified gap of eta (eta - proven lower bound) / eta largest class 3 %" in (
        tmp_path / "table1.md").read_text()
