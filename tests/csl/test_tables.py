"""Tables 2/3 and the Figure 7 overlay from a small fake result frame in the csl_segmentation row format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from sustainml_exp.families.csl_segmentation.tables import OVERLAY_COLOURS, overlay_rgb, write_tables

# Table 3 runs at the default settings (10 patches of 50 px, MSE), one per seed.
DEFAULT_TEST = (0.60, 0.70, 0.65, 0.50, 0.55)
DEFAULT_VAL = (0.71, 0.69, 0.75, 0.60, 0.72)
DEFAULT_TIME = (100.0, 500.0, 300.0, 200.0, 400.0)
# Table 2 sweeps, 3 seeds each: (knob, value) -> validation Dice per seed.
COSTS = ["Train (s)", "Wall (s)", "Energy (kWh)", "CO2 (g)"]
SWEEP_VAL = {("n_patches", 5): (0.60, 0.70, 0.64), ("n_patches", 15): (0.50, 0.40, 0.45),
             ("patch_size", 30): (0.30, 0.35, 0.20), ("patch_size", 80): (0.66, 0.61, 0.68)}


def _row(dataset: str, method: str, seed: int, *, similarity: str = "mse", n_patches: int = 10,
         patch_size: int = 50, grid_stride: int = 20, val_dice: float = 0.5, test_dice: float = 0.5,
         time_to_best_s: float = 60.0, status: str = "ok") -> dict[str, Any]:
    run_id = f"{dataset}-{method}-{similarity}-{n_patches}-{patch_size}-{grid_stride}-{seed}-{status}"
    network = method != "threshold"
    return {
        "run_id": run_id, "experiment": "csl_segmentation", "dataset": dataset, "method": method, "seed": seed,
        "status": status, "error": "" if status == "ok" else "RuntimeError: boom", "epochs": 300,
        "device": "cpu", "similarity": similarity, "n_patches": n_patches, "patch_size": patch_size,
        "grid_stride": grid_stride, "crop_size": 300, "n_classes": 4, "batch_size": 10, "postprocess": "paper",
        "val_dice": val_dice, "test_dice": test_dice, "channel": 1 if network else -1, "best_epoch": 120,
        "time_to_best_s": time_to_best_s, "n_params": 7372 if network else 0,
        "n_params_with_featuriser": 10758 if network else 0,
        "threshold_value": float("nan") if network else 0.45, "selection": "train_labels",
        "train_s": 100.0 * (seed + 1) if network else 0.5, "wall_s": 120.0 * (seed + 1),
        "energy_kwh": 1e-3 * (seed + 1), "co2_g": 0.5 * (seed + 1),
    }


def _fake_results(overlay: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    rows = []
    for seed, (test, val, time) in enumerate(zip(DEFAULT_TEST, DEFAULT_VAL, DEFAULT_TIME)):
        rows.append(_row("monuseg", "csl", seed, test_dice=test, val_dice=val, time_to_best_s=time))
    for (knob, value), vals in SWEEP_VAL.items():
        for seed, val in enumerate(vals):
            rows.append(_row("monuseg", "csl", seed, val_dice=val, test_dice=0.3, **{knob: value}))
    # Different grid: never pooled with the default runs, although its val Dice would move the median.
    rows.append(_row("monuseg", "csl", 7, grid_stride=10, val_dice=0.01, test_dice=0.01))
    rows += [_row("monuseg", "csl", s, similarity="ce", val_dice=0.4, test_dice=t) for s, t in ((0, 0.41), (1, 0.43))]
    rows += [_row("monuseg", "threshold", s, test_dice=t) for s, t in ((0, 0.58), (1, 0.60))]
    rows += [_row("monuseg", "supervised", s, test_dice=t) for s, t in ((0, 0.70), (1, 0.75), (2, 0.80))]
    # Would be the maximum and the best run if failed runs counted.
    rows.append(_row("monuseg", "csl", 9, val_dice=0.99, test_dice=0.99, status="failed"))
    rows += [_row("synthetic_nuclei", "csl", s, test_dice=t, val_dice=t) for s, t in ((0, 0.8), (1, 0.9), (2, 0.7))]
    records = [dict(r) for r in rows]
    for record in records:
        record["test_dice_per_image"] = [record["test_dice"]] * 2
        if record["method"] == "csl":
            name = f"{record['run_id']}.npz"
            record["artifacts"] = {"overlay": str(overlay.parent / name)}
    # The overlay belongs to the best validation Dice (0.75, seed 2), not to the best test Dice (0.70, seed 1).
    best = next(r for r in records if r["dataset"] == "monuseg" and r["val_dice"] == 0.75 and r["method"] == "csl")
    best["artifacts"]["overlay"] = str(overlay)
    failed = next(r for r in records if r["status"] == "failed")
    failed["artifacts"]["overlay"] = str(overlay)
    return pd.DataFrame(rows), records


def _write_overlay(path: Path) -> None:
    images = np.full((2, 8, 8, 3), 0.5, dtype=np.float32)
    truth = np.zeros((2, 8, 8), dtype=bool)
    truth[:, 2:6, 2:6] = True
    pred = np.zeros((2, 8, 8), dtype=bool)
    pred[:, 3:7, 3:7] = True
    np.savez(path, images=images, truth=truth, pred=pred, names=np.array(["img_a", "img_b"]))


def _table_rows(markdown: str, section: str) -> list[list[str]]:
    """Cells of the pipe-table rows under the '## <section>' heading (header row included)."""
    block = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def _section_notes(markdown: str, section: str) -> str:
    return markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csl_tables")
    overlay = root / "artifacts" / "best.npz"
    overlay.parent.mkdir()
    _write_overlay(overlay)
    frame, records = _fake_results(overlay)
    out = root / "tables"
    written = write_tables(frame, records, out)
    assert [p.name for p in written] == ["table2.md", "table2.tex", "table3.md", "table3.tex", "figure7_monuseg.png"]
    assert all(p.is_file() for p in written)
    return out


def test_table2_medians_per_cell_with_paper_column(tables_dir: Path) -> None:
    md = (tables_dir / "table2.md").read_text()
    rows = _table_rows(md, "monuseg")
    assert rows[0] == ["Sweep", "Value", "n", "Median val Dice", *COSTS,
                       "Paper (D3.2 Table 2, MoNuSeg) Median val Dice"]
    # #patches = 5, seeds 0, 1, 2: train 100 / 200 / 300 s, wall 120 / 240 / 360 s, 1 / 2 / 3 Wh, 0.5 / 1 / 1.5 g.
    assert rows[1][4:8] == ["200 ± 100", "240 ± 120", "2.00e-03 ± 1.0e-03", "1.00 ± 0.50"]
    cells = {(r[0].split(" ")[0], r[1]): r[2:4] + r[8:] for r in rows[1:]}
    default_median = f"{np.median(DEFAULT_VAL):.4f}"
    assert default_median == "0.7100"
    assert cells[("#patches", "5")] == ["3", "0.6400", "0.6643"]
    assert cells[("#patches", "10")] == ["5", default_median, "0.7071"]  # the grid_stride=10 run stays out
    assert cells[("#patches", "15")] == ["3", "0.4500", "0.6682"]
    assert cells[("#patches", "20")] == ["0", "–", "0.6986"]  # not run: the paper's value alone
    assert cells[("#patches", "25")] == ["0", "–", "0.6059"]
    assert cells[("patch", "20")] == ["0", "–", "0.5063"]
    assert cells[("patch", "30")] == ["3", "0.3000", "0.6562"]
    assert cells[("patch", "50")] == ["5", default_median, "0.6980"]
    assert cells[("patch", "80")] == ["3", "0.6600", "0.6606"]
    assert cells[("patch", "120")] == ["0", "–", "0.6871"]
    assert len(cells) == 10
    assert "similarity=mse, grid_stride=20" in _section_notes(md, "monuseg")
    synthetic = _table_rows(md, "synthetic_nuclei")
    assert [row[:4] + row[8:] for row in synthetic[1:]] == [["#patches (P = 50)", "10", "3", "0.8000", "–"],
                                                          ["patch size P (#patches = 10)", "50", "3", "0.8000", "–"]]
    assert "MoNuSeg only" in _section_notes(md, "synthetic_nuclei")
    assert "1 run(s) with status other than ok are excluded." in md
    tex = (tables_dir / "table2.tex").read_text()
    assert r"\multicolumn{1}{c}{Paper (D3.2 Table 2, MoNuSeg)}" in tex
    assert "0.6643" in tex and r"\textbf{monuseg}" in tex


def test_table3_statistics_and_paper_reference(tables_dir: Path) -> None:
    md = (tables_dir / "table3.md").read_text()
    rows = _table_rows(md, "monuseg")
    paper = "Paper (D3.2 Table 3)"
    assert rows[0] == ["Method", "n", "Max", "Mean ± std", "80th pct", "Params", "Params + featuriser",
                       "Time to best (s)", *COSTS, f"{paper} Max", f"{paper} Mean ± std", f"{paper} 80th pct",
                       f"{paper} Params", f"{paper} Time to converge"]
    by_label = {r[0]: r[1:] for r in rows[1:]}
    # The cost of each row beside its quality: CSL's five seeds against the supervised network's three.
    assert by_label["Ours: CSL (MSE)"][7:11] == ["300 ± 158", "360 ± 190", "3.00e-03 ± 1.6e-03", "1.50 ± 0.79"]
    assert by_label["Supervised CNN (BCE)"][7:11] == ["200 ± 100", "240 ± 120", "2.00e-03 ± 1.0e-03", "1.00 ± 0.50"]
    assert by_label["Intensity threshold"][7] == "0.500 ± 0.000"
    by_label = {label: cells[:7] + cells[11:] for label, cells in by_label.items()}
    assert list(by_label) == ["Intensity threshold", "Supervised CNN (BCE)", "Scale Pretext (Sahasrabudhe et al. 2020)",
                              "Ours: CSL (MSE)", "Ours: CSL (CE)"]
    # linear interpolation between 0.65 and 0.70 (position 3.2 of 0..4); nearest-rank would give 0.65 or 0.70
    assert np.percentile(DEFAULT_TEST, 80) == pytest.approx(0.66)
    std = np.std(DEFAULT_TEST, ddof=1)
    assert by_label["Ours: CSL (MSE)"] == ["5", "0.7000", f"0.6000 ± {std:.4f}", "0.6600", "7,372", "10,758",
                                           "300.0", "0.6797", "0.62 ± 0.05", "0.6469", "10.8k", "~5 min"]
    assert by_label["Ours: CSL (CE)"][:4] == ["2", "0.4300", "0.4200 ± 0.0141", "0.4260"]
    assert by_label["Intensity threshold"] == ["2", "–", "0.5900", "–", "0", "0", "60.0",
                                               "–", "0.5823", "–", "–", "–"]
    assert by_label["Supervised CNN (BCE)"][:4] == ["3", "–", "0.7500 ± 0.0500", "–"]
    assert by_label["Supervised CNN (BCE)"][7:] == ["–", "0.7666", "–", "–", "–"]
    assert by_label["Scale Pretext (Sahasrabudhe et al. 2020)"] == ["0", *["–"] * 6, "–", "0.6209", "–", "–", "–"]
    notes = _section_notes(md, "monuseg")
    assert "Ours: CSL (MSE): n_patches=10, patch_size=50, grid_stride=20" in notes
    assert "13 run(s) at other settings (Table 2 sweeps) not included" in notes
    assert "3,386-parameter featuriser" in md and "7,372 + 3,386 = 10,758" in md

    synthetic = _table_rows(md, "synthetic_nuclei")
    assert [r[0] for r in synthetic[1:]] == ["Ours: CSL (MSE)"]
    assert synthetic[1][1:5] == ["3", "0.9000", "0.8000 ± 0.1000", "0.8600"]
    assert synthetic[1][-5:] == ["–"] * 5
    tex = (tables_dir / "table3.tex").read_text()
    assert r"\multicolumn{5}{c}{Paper (D3.2 Table 3)}" in tex and r"0.62 $\pm$ 0.05" in tex


def test_overlay_colours_and_figure(tables_dir: Path) -> None:
    image = np.full((1, 4, 3), 0.5)
    truth = np.array([[True, True, False, False]])
    pred = np.array([[True, False, True, False]])
    out = overlay_rgb(image, truth, pred)
    expected = [0.5 * 0.5 + 0.5 * np.asarray(OVERLAY_COLOURS[k][1])
                for k in ("true positive", "false negative", "false positive")] + [np.full(3, 0.5)]
    assert np.allclose(out[0], np.stack(expected))
    assert len({tuple(c) for c in np.round(out[0], 6)}) == 4  # four distinct colours

    png = matplotlib.image.imread(tables_dir / "figure7_monuseg.png")[..., :3]
    for kind in ("true positive", "false negative", "false positive"):
        colour = 0.5 * 0.5 + 0.5 * np.asarray(OVERLAY_COLOURS[kind][1])
        assert (np.abs(png - colour).max(axis=-1) < 2.5 / 255).sum() > 50, kind
    md = (tables_dir / "table3.md").read_text()
    monuseg_notes = _section_notes(md, "monuseg")
    assert "figure7_monuseg.png: run monuseg-csl-mse-10-50-20-2-ok (seed 2, val Dice 0.7500, test Dice 0.6500)" in \
        monuseg_notes and "best validation Dice" in monuseg_notes
    assert "true positives green, false negatives blue, false positives red" in monuseg_notes


def test_missing_overlay_is_skipped_with_a_note(tables_dir: Path) -> None:
    assert not (tables_dir / "figure7_synthetic_nuclei.png").exists()
    notes = _section_notes((tables_dir / "table3.md").read_text(), "synthetic_nuclei")
    assert "Figure 7 overlay skipped:" in notes and "synthetic_nuclei-csl-mse-10-50-20-1-ok.npz" in notes  # val 0.9
    assert "is missing" in notes


def test_no_ok_runs_gives_messages(tmp_path: Path) -> None:
    frame = pd.DataFrame([_row("monuseg", "csl", 0, status="failed")])
    written = write_tables(frame, [], tmp_path)
    assert [p.name for p in written] == ["table2.md", "table2.tex", "table3.md", "table3.tex"]
    assert "No contrastive (method=csl) runs with status ok were recorded." in (tmp_path / "table2.md").read_text()
    assert "No runs were recorded" in (tmp_path / "table3.tex").read_text()
