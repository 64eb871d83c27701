"""Tables 2 and 3 and a Figure 7-style overlay of D3.2 Section 3, regenerated from the merged csl_segmentation
records.

Table 2: median validation Dice of the contrastive method vs the number of patches and vs the patch size, with
the runs' cost.
Table 3: test Dice of the intensity threshold, the supervised CNN and the contrastive method over seeds, with
parameter counts, time to convergence and what each row cost (training, wall time, energy, CO2), next to the
published numbers. Figure 7: true positives, false negatives and false positives of the contrastive run with the best
validation Dice on a few test images.

Runs that differ in a knob that changes what is computed are never pooled: every row fixes the knobs it does not
vary at their most common value (the configuration default on ties) and says so in a note.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sustainml_exp.families.csl_segmentation.config import SIMILARITIES, CSLRunConfig
from sustainml_exp.families.csl_segmentation.evaluate import dice
from sustainml_exp.tables.cost import RUN_COSTS, cost_cells, cost_headers, cost_note
from sustainml_exp.tables.render import (
    DASH,
    Section,
    fmt,
    is_missing,
    knob_value,
    mean_std,
    numeric,
    save_figure,
    seed_note,
    tie_order,
    write_table_files,
)

__all__ = ["OVERLAY_COLOURS", "overlay_rgb", "write_tables"]

DATASET_ORDER = ("monuseg", "consep", "synthetic_nuclei")
# Knobs that change what a run computes, in the order they are fixed when choosing the most common setting.
CSL_KNOBS = ("similarity", "n_patches", "patch_size", "grid_stride", "crop_size", "n_classes", "batch_size",
             "postprocess", "selection", "epochs")
BASELINE_KNOBS = {
    "supervised": ("n_classes", "crop_size", "batch_size", "postprocess", "selection", "epochs"),
    "threshold": ("postprocess", "selection"),
}
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(CSLRunConfig) if f.name in CSL_KNOBS}
DICE_DIGITS = 4
REFERENCE_FEATURISER_PARAMS = 3386  # the reference code's unused featuriser (model.REFERENCE_FEATURISER_PARAMS)
REFERENCE_CONFIDENCE_PARAMS = 7372  # the confidence network with K = 4

# ---------------------------------------------------------------------------------------------------------------
# Published numbers (D3.2 Tables 2 and 3)

# MoNuSeg, median validation Dice over 3 runs; the #patches sweep at P = 50, the P sweep at 10 patches.
_PAPER_TABLE2: dict[str, dict[str, dict[int, float]]] = {
    "monuseg": {
        "n_patches": {5: 0.6643, 10: 0.7071, 15: 0.6682, 20: 0.6986, 25: 0.6059},
        "patch_size": {20: 0.5063, 30: 0.6562, 50: 0.6980, 80: 0.6606, 120: 0.6871},
    },
}


@dataclass(frozen=True)
class PaperTable3:
    threshold: float
    cnn: float
    scale_pretext: float
    ours_max: float
    ours_mean_std: str
    ours_p80: float


_PAPER_TABLE3 = {
    "monuseg": PaperTable3(0.5823, 0.7666, 0.6209, 0.6797, "0.62 ± 0.05", 0.6469),
    "consep": PaperTable3(0.5700, 0.7375, 0.5139, 0.6266, "0.52 ± 0.06", 0.5448),
}
PAPER_PARAMS = "10.8k"
PAPER_TIME = "~5 min"


# ---------------------------------------------------------------------------------------------------------------
# Rows

def _modal_subset(rows: pd.DataFrame, knobs: Iterable[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep the rows at the most common value of each knob in turn (the default value, else the smallest, on
    ties); returns the rows and the values chosen."""
    chosen: dict[str, Any] = {}
    for knob in knobs:
        if knob not in rows.columns or rows.empty:
            continue
        values = [knob_value(v) for v in rows[knob]]
        counts = Counter(values)
        top = max(counts.values())
        tied = [v for v, c in counts.items() if c == top]
        value = _DEFAULTS[knob] if _DEFAULTS.get(knob) in tied else min(tied, key=tie_order)
        rows = rows[[v == value for v in values]]
        chosen[knob] = value
    return rows, chosen


def _settings(chosen: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in chosen.items() if v is not None)


def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame.columns:
        return frame.iloc[0:0]
    ok = frame[frame["status"].astype(str) == "ok"].copy()
    for column in ("dataset", "method"):
        ok[column] = ok[column].astype(str) if column in ok.columns else ""
    return ok


def _dataset_order(datasets: Iterable[str]) -> list[str]:
    present = set(datasets)
    return [d for d in DATASET_ORDER if d in present] + sorted(present - set(DATASET_ORDER))


def _count_cell(rows: pd.DataFrame, column: str) -> str:
    """The recorded integer(s), e.g. '7,372'; several values (should not happen in one row) joined by '/'."""
    values = sorted({int(v) for v in numeric(rows, column)})
    return "/".join(f"{v:,}" for v in values) if values else DASH


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


# ---------------------------------------------------------------------------------------------------------------
# Table 2

TABLE2_TITLE = ("Table 2: median validation Dice of the contrastive method vs the number of patches and the patch "
                "size (D3.2 Section 3)")
TABLE2_COLUMNS = ("Sweep", "Value", "n", "Median val Dice", *cost_headers(RUN_COSTS))
PAPER2_GROUP = "Paper (D3.2 Table 2, MoNuSeg)"
PAPER2_COLUMNS = ("Median val Dice",)
# (swept knob, row label, knob held fixed, its value): the paper's two sweeps around the defaults.
_SWEEPS = (
    ("n_patches", f"#patches (P = {_DEFAULTS['patch_size']})", "patch_size", _DEFAULTS["patch_size"]),
    ("patch_size", f"patch size P (#patches = {_DEFAULTS['n_patches']})", "n_patches", _DEFAULTS["n_patches"]),
)


def _table2_section(dataset: str, csl: pd.DataFrame) -> Section:
    paper = _PAPER_TABLE2.get(dataset, {})
    records, notes = [], []
    for swept, label, held, held_value in _SWEEPS:
        at_held = csl[[knob_value(v) == held_value for v in csl[held]]] if held in csl.columns else csl.iloc[0:0]
        others = [k for k in CSL_KNOBS if k not in (swept, held)]
        rows, chosen = _modal_subset(at_held, others)
        by_value: dict[Any, list[int]] = {}
        if swept in rows.columns:
            for position, value in enumerate(rows[swept]):
                if knob_value(value) is not None:
                    by_value.setdefault(knob_value(value), []).append(position)
        paper_values = paper.get(swept, {})
        for value in sorted(set(by_value) | set(paper_values), key=tie_order):
            cell = rows.iloc[by_value.get(value, [])]
            records.append([label, str(value), str(len(cell)), fmt(_median(numeric(cell, "val_dice")), DICE_DIGITS),
                            *cost_cells(cell, RUN_COSTS), fmt(paper_values.get(value), DICE_DIGITS)])
            notes += seed_note(f"{label} = {value}", cell)
        if len(rows):
            notes.append(f"{label}: {held}={held_value}, {_settings(chosen)}.")
    if paper:
        notes.append("Paper: MoNuSeg, median over 3 runs, the other knobs at their defaults.")
    else:
        notes.append("The paper gives Table 2 for MoNuSeg only; the paper column is '–'.")
    columns = [*TABLE2_COLUMNS, *(f"{PAPER2_GROUP} {c}" for c in PAPER2_COLUMNS)]
    return Section(dataset, pd.DataFrame(records, columns=columns), notes)


_SELECTION_NOTE = ("Val Dice is the score the channel and the epoch are chosen by: mean per-image Dice on the "
                   "validation split (training images held out, never trained on) with selection=val_split, or on "
                   "the training images with their labels (every one trained on, self-supervised) with "
                   "selection=train_labels, the paper's protocol. The reference code chooses on the test set.")


def _table2_notes(n_ignored: int) -> list[str]:
    notes = [
        _SELECTION_NOTE,
        "Median val Dice: the median over the n runs (seeds) of the cell.",
        cost_note(RUN_COSTS),
        "Each sweep varies one knob with the other held at its default; every remaining knob is fixed at its most "
        "common value among those runs (listed per dataset), so runs of other settings are not pooled.",
    ]
    if n_ignored:
        notes.append(f"{n_ignored} run(s) with status other than ok are excluded.")
    return notes


def _write_table2(ok: pd.DataFrame, n_ignored: int, out_dir: Path) -> list[Path]:
    csl = ok[ok["method"] == "csl"] if not ok.empty else ok
    sections = [_table2_section(ds, csl[csl["dataset"] == ds]) for ds in _dataset_order(csl["dataset"])] \
        if not csl.empty else []
    return write_table_files(
        out_dir / "table2", TABLE2_TITLE, sections, _table2_notes(n_ignored),
        columns=TABLE2_COLUMNS, lead_columns=2, paper_group=PAPER2_GROUP, paper_columns=PAPER2_COLUMNS,
        empty_message="No contrastive (method=csl) runs with status ok were recorded.")


# ---------------------------------------------------------------------------------------------------------------
# Table 3

TABLE3_TITLE = "Table 3: test Dice of contrastive self-supervised segmentation and its baselines (D3.2 Section 3)"
TABLE3_COLUMNS = ("Method", "n", "Max", "Mean ± std", "80th pct", "Params", "Params + featuriser",
                  "Time to best (s)", *cost_headers(RUN_COSTS))
PAPER3_GROUP = "Paper (D3.2 Table 3)"
PAPER3_COLUMNS = ("Max", "Mean ± std", "80th pct", "Params", "Time to converge")
_LABELS = {"threshold": "Intensity threshold", "supervised": "Supervised CNN (BCE)",
           "scale_pretext": "Scale Pretext (Sahasrabudhe et al. 2020)"}


def _csl_label(similarity: str | None) -> str:
    return f"Ours: CSL ({similarity.upper()})" if similarity else "Ours: CSL"


def _measured_cells(method: str, rows: pd.DataFrame) -> list[str]:
    """n, max, mean (± std), 80th percentile, params, params + featuriser, median time to best, costs."""
    test = numeric(rows, "test_dice")
    if method == "csl":
        best = fmt(float(test.max()), DICE_DIGITS) if test.size else DASH
        spread = mean_std(test, DICE_DIGITS)
        p80 = fmt(float(np.percentile(test, 80)), DICE_DIGITS) if test.size else DASH
    else:
        best, p80 = DASH, DASH
        spread = mean_std(test, DICE_DIGITS) if method == "supervised" else \
            fmt(float(test.mean()) if test.size else None, DICE_DIGITS)
    return [str(len(rows)), best, spread, p80, _count_cell(rows, "n_params"),
            _count_cell(rows, "n_params_with_featuriser"), fmt(_median(numeric(rows, "time_to_best_s")), 1),
            *cost_cells(rows, RUN_COSTS)]


def _paper3_cells(paper: PaperTable3 | None, kind: str) -> list[str]:
    if paper is None:
        return [DASH] * len(PAPER3_COLUMNS)
    if kind == "csl":
        return [fmt(paper.ours_max, DICE_DIGITS), paper.ours_mean_std, fmt(paper.ours_p80, DICE_DIGITS),
                PAPER_PARAMS, PAPER_TIME]
    single = {"threshold": paper.threshold, "supervised": paper.cnn, "scale_pretext": paper.scale_pretext}[kind]
    return [DASH, fmt(single, DICE_DIGITS), DASH, DASH, DASH]


def _table3_section(dataset: str, rows: pd.DataFrame, extra_notes: Sequence[str]) -> Section:
    paper = _PAPER_TABLE3.get(dataset)
    records, notes = [], []
    for method in ("threshold", "supervised"):
        runs = rows[rows["method"] == method]
        if runs.empty and paper is None:
            continue
        runs, chosen = _modal_subset(runs, BASELINE_KNOBS[method])
        label = _LABELS[method]
        records.append([label, *_measured_cells(method, runs), *_paper3_cells(paper, method)])
        notes += seed_note(label, runs)
        if len(runs) and chosen:
            notes.append(f"{label}: {_settings(chosen)}.")
    if paper is not None:
        records.append([_LABELS["scale_pretext"], "0", *[DASH] * (len(TABLE3_COLUMNS) - 2),
                        *_paper3_cells(paper, "scale_pretext")])
    csl = rows[rows["method"] == "csl"]
    present = {knob_value(s) for s in csl["similarity"]} if "similarity" in csl.columns else {None}
    similarities = [s for s in SIMILARITIES if s in present] + sorted(
        (s for s in present if s not in SIMILARITIES), key=tie_order)
    if csl.empty and paper is not None:
        records.append([_csl_label(None), *_measured_cells("csl", csl), *_paper3_cells(paper, "csl")])
    for similarity in similarities if not csl.empty else []:
        of_similarity = csl[[knob_value(s) == similarity for s in csl["similarity"]]] if "similarity" in csl.columns \
            else csl
        runs, chosen = _modal_subset(of_similarity, [k for k in CSL_KNOBS if k != "similarity"])
        label = _csl_label(similarity)
        records.append([label, *_measured_cells("csl", runs), *_paper3_cells(paper, "csl")])
        notes += seed_note(label, runs)
        left_out = len(of_similarity) - len(runs)
        notes.append(f"{label}: {_settings(chosen)}"
                     + (f"; {left_out} run(s) at other settings (Table 2 sweeps) not included." if left_out else "."))
    if paper is None:
        notes.append("The paper has no results for this dataset; paper columns are '–'.")
    elif len(similarities) > 1:
        notes.append("The paper's 'ours' values are repeated next to each similarity.")
    notes += list(extra_notes)
    columns = [*TABLE3_COLUMNS, *(f"{PAPER3_GROUP} {c}" for c in PAPER3_COLUMNS)]
    return Section(dataset, pd.DataFrame(records, columns=columns), notes)


def _table3_notes(n_ignored: int) -> list[str]:
    notes = [
        "Test Dice: mean per-image Dice on the test split at the channel and epoch chosen by the selection score "
        "(never the test set; the reference code's numbers are optimistic by construction).",
        _SELECTION_NOTE,
        "Contrastive rows: max, mean ± sample std (ddof=1) and 80th percentile (numpy linear interpolation) over "
        "the n runs (one per seed). Threshold: mean only; supervised: mean ± std. The paper's baseline numbers are "
        "single values; they are shown in its Mean column.",
        f"Params: trainable parameters of the confidence network ({REFERENCE_CONFIDENCE_PARAMS:,} for K = 4). "
        f"'Params + featuriser' adds the {REFERENCE_FEATURISER_PARAMS:,}-parameter featuriser network that the "
        f"reference code always builds but never uses; the paper's {PAPER_PARAMS} counts it "
        f"({REFERENCE_CONFIDENCE_PARAMS:,} + {REFERENCE_FEATURISER_PARAMS:,} = "
        f"{REFERENCE_CONFIDENCE_PARAMS + REFERENCE_FEATURISER_PARAMS:,}).",
        "Time to best: training seconds until the selected epoch (the paper's time to convergence), median over "
        "runs; for the threshold, the seconds its fit took.",
        cost_note(RUN_COSTS) + " For the threshold, Train is the fit of its one parameter on the training images; "
        "for the networks the whole training loop, so CSL and the supervised CNN compare directly.",
        "Scale Pretext (Sahasrabudhe et al., MICCAI 2020) is quoted from the paper only; it is not run here.",
    ]
    if n_ignored:
        notes.append(f"{n_ignored} run(s) with status other than ok are excluded.")
    return notes


def _write_table3(ok: pd.DataFrame, n_ignored: int, out_dir: Path,
                  overlay_notes: dict[str, list[str]]) -> list[Path]:
    sections = [] if ok.empty else [
        _table3_section(ds, ok[ok["dataset"] == ds], overlay_notes.get(ds, [])) for ds in _dataset_order(ok["dataset"])]
    return write_table_files(
        out_dir / "table3", TABLE3_TITLE, sections, _table3_notes(n_ignored),
        columns=TABLE3_COLUMNS, lead_columns=1, paper_group=PAPER3_GROUP, paper_columns=PAPER3_COLUMNS,
        empty_message="No runs were recorded (no csl_segmentation rows with status ok).")


# ---------------------------------------------------------------------------------------------------------------
# Figure 7: overlays

# kind -> (name used in captions, RGB)
OVERLAY_COLOURS = {"true positive": ("green", (0.0, 0.8, 0.0)), "false negative": ("blue", (0.0, 0.3, 1.0)),
                   "false positive": ("red", (1.0, 0.0, 0.0))}
OVERLAY_ALPHA = 0.5


def overlay_rgb(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W, 3) image in [0, 1] with true positives, false negatives and false positives tinted in the colours
    of ``OVERLAY_COLOURS``; other pixels unchanged."""
    out = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0).copy()
    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    for kind, where in (("true positive", truth & pred), ("false negative", truth & ~pred),
                        ("false positive", ~truth & pred)):
        out[where] = (1.0 - OVERLAY_ALPHA) * out[where] + OVERLAY_ALPHA * np.asarray(OVERLAY_COLOURS[kind][1])
    return out


def _load_overlay(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in ("images", "truth", "pred", "names")}
    n = len(arrays["images"])
    if arrays["images"].ndim != 4 or arrays["images"].shape[-1] != 3 or any(
            len(arrays[k]) != n for k in ("truth", "pred", "names")):
        raise ValueError(f"unexpected shapes {[tuple(a.shape) for a in arrays.values()]}")
    return arrays


def _best_csl_row(rows: pd.DataFrame) -> pd.Series | None:
    """The contrastive run with the best selection (validation) score, as the reference code picks the model it
    shows; the test set never chooses."""
    csl = rows[rows["method"] == "csl"]
    scores = pd.to_numeric(csl["val_dice"], errors="coerce") if "val_dice" in csl.columns else None
    if scores is None or not scores.notna().any():
        return None
    ranked = csl.assign(_score=scores.to_numpy(), _id=csl["run_id"].astype(str) if "run_id" in csl.columns else "")
    return ranked.dropna(subset=["_score"]).sort_values(["_score", "_id"], ascending=[False, True]).iloc[0]


def _write_overlay(dataset: str, row: pd.Series, record: dict[str, Any] | None,
                   out_dir: Path) -> tuple[list[Path], str]:
    test = pd.to_numeric(pd.Series([row.get("test_dice")]), errors="coerce").iloc[0]
    run = (f"run {row.get('run_id')} (seed {knob_value(row.get('seed'))}, val Dice {float(row['_score']):.4f}, "
           f"test Dice {fmt(float(test), DICE_DIGITS)})")
    path_text = ((record or {}).get("artifacts") or {}).get("overlay")
    if is_missing(path_text):
        return [], f"Figure 7 overlay skipped: the best CSL {run} recorded no overlay."
    path = Path(str(path_text))
    if not path.is_file():
        return [], f"Figure 7 overlay skipped: {path} of the best CSL {run} is missing."
    try:
        arrays = _load_overlay(path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        return [], f"Figure 7 overlay skipped: {path} of the best CSL {run} is unreadable ({exc})."
    n = len(arrays["images"])
    if n == 0:
        return [], f"Figure 7 overlay skipped: {path} of the best CSL {run} holds no images."
    fig = Figure(figsize=(max(3.2 * n, 6.4), 3.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, image, truth, pred, name in zip(axes, arrays["images"], arrays["truth"], arrays["pred"],
                                            arrays["names"]):
        ax.imshow(overlay_rgb(image, truth, pred), interpolation="nearest")
        ax.set_title(f"{name}: Dice {dice(pred, truth):.3f}", fontsize=8)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=rgb, label=f"{kind} ({name})") for kind, (name, rgb) in OVERLAY_COLOURS.items()],
               loc="outside lower center", ncol=len(OVERLAY_COLOURS), fontsize=8)
    fig.suptitle(f"Figure 7: contrastive run with the best validation Dice on {dataset}\n{run}", fontsize=9)
    name = f"figure7_{dataset}.png"
    written = save_figure(fig, out_dir / name)
    colours = ", ".join(f"{kind}s {name}" for kind, (name, _) in OVERLAY_COLOURS.items())
    return written, (f"{name}: {run}, the run with the best validation Dice (the selection score, as the "
                     f"reference code chooses); {colours} over the image.")


def _write_overlays(ok: pd.DataFrame, records: Sequence[dict[str, Any]],
                    out_dir: Path) -> tuple[list[Path], dict[str, list[str]]]:
    by_id = {str(r.get("run_id")): r for r in records if r.get("status") == "ok"}
    written: list[Path] = []
    notes: dict[str, list[str]] = {}
    if ok.empty:
        return written, notes
    for dataset in _dataset_order(ok["dataset"]):
        row = _best_csl_row(ok[ok["dataset"] == dataset])
        if row is None:
            continue
        paths, note = _write_overlay(dataset, row, by_id.get(str(row.get("run_id"))), out_dir)
        written += paths
        notes[dataset] = [note]
    return written, notes


# ---------------------------------------------------------------------------------------------------------------

def write_tables(frame: pd.DataFrame, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write table2.md/.tex, table3.md/.tex and figure7_<dataset>.png (for each dataset whose best contrastive
    run kept an overlay) into ``out_dir``; return the written paths. Only rows with status 'ok' count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = _ok_rows(frame)
    n_ignored = len(frame) - len(ok)
    figures, overlay_notes = _write_overlays(ok, records, out_dir)
    written = _write_table2(ok, n_ignored, out_dir)
    written += _write_table3(ok, n_ignored, out_dir, overlay_notes)
    return written + figures
