"""Table 1 and Figures 3/4 of D3.2 Section 2 (coresets with adversarial training), regenerated from the merged
mfc_coreset records.

Table 1: clean (STD) and robust (ROB, AutoAttack-style APGD-CE + APGD-DLR) test accuracy of every method at k images
per class with adversarial training, mean ± std over seeds, next to the published numbers.
Figures 3/4: test, linf-robust and l2-robust PGD accuracy vs k, one panel per training mode (MLP on MNIST, ConvNet
on CIFAR10); every other (dataset, model) pair with runs gets the same figure as ``figure_k_<dataset>_<model>``.

Runs that differ in a knob that changes what is computed are never pooled: every table section and figure panel
fixes the knobs it does not vary at their most common value (the paper's setting on ties) and says so in a note.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sustainml_exp.families.mfc_coreset.config import (
    CONDENSE_ITERATIONS_DIGITS,
    EPS_LINF,
    MCS_STATUSES,
    METHODS,
    TM_PROTOCOLS,
    TRAIN_MODES,
    AttackConfig,
    MFCRunConfig,
    eps_l2_from_linf,
    input_dim,
)
from sustainml_exp.results import atomic_write_text
from sustainml_exp.tables.cost import RUN_COSTS, SELECT, cost_cells, cost_headers, cost_note
from sustainml_exp.tables.render import (
    DASH,
    Section,
    knob_value,
    latex,
    latex_escape,
    latex_message,
    markdown,
    mean_std,
    numeric,
    save_figure,
    seed_note,
    tie_order,
    write_table_files,
)

__all__ = ["PAPER_TABLE1", "write_tables"]

DATASET_ORDER = ("mnist", "cifar10", "cifar100", "svhn", "tinyimagenet", "fashion_mnist", "digits")
# Table 1's method order in the paper; k-center and herding are this reproduction's extras.
PAPER_METHODS = ("full", "rand", "mcs", "craig", "gradmatch", "submod", "dm", "gm", "tm")
EXTRA_METHODS = ("kcenter", "herding")
METHOD_LABELS = {"full": "Raw (full)", "rand": "Rand", "mcs": "MCS", "craig": "Craig", "gradmatch": "GradM",
                 "submod": "SubMod", "dm": "DM", "gm": "GM", "tm": "TM", "kcenter": "k-Center", "herding": "Herding"}
# weighted / generalized are training variants of a method: runs at the other value are shown as extra rows
# (curves) beside the method's row instead of being dropped, never pooled with it.
VARIANT_KNOBS = ("weighted", "generalized")
# Knobs that change a run's clean or robust accuracy, in the order they are fixed (k first: it is Table 1's
# budget). Columns a record set lacks are skipped.
TABLE1_KNOBS = ("k", "model", "train", "norm", "eps_linf", "eps_l2", "epochs", *VARIANT_KNOBS, "train_pgd_steps",
                "lr", "batch_size", "pgd_steps", "aa_steps", "aa_restarts")
# norm and the AutoAttack settings only change rob_acc_aa, which the figures do not show.
FIGURE_KNOBS = ("eps_linf", "eps_l2", "epochs", *VARIANT_KNOBS, "train_pgd_steps", "lr", "batch_size", "pgd_steps")
PERCENT_DIGITS = 2

# ---------------------------------------------------------------------------------------------------------------
# Published numbers (D3.2 / the paper's Table 1: k = 50, ResNet18): (mean, std) of STD and of ROB in % over 3
# repeats, every entry the deliverable prints (the spec copies the whole table); a method it leaves out is absent.

Published = tuple[tuple[float, float], tuple[float, float]]
PAPER_TABLE1: dict[str, dict[str, Published]] = {
    "mnist": {"rand": ((95.15, 0.14), (92.50, 0.37)), "mcs": ((96.42, 0.21), (92.83, 0.07)),
              "craig": ((87.02, 0.81), (72.45, 1.11)), "gradmatch": ((91.24, 0.44), (86.46, 0.37)),
              "submod": ((82.22, 0.02), (75.40, 0.21)), "dm": ((96.70, 0.09), (91.20, 0.27)),
              "gm": ((96.54, 0.15), (83.68, 0.74)), "tm": ((95.93, 0.36), (82.84, 1.73))},
    "cifar10": {"rand": ((32.29, 0.76), (8.79, 1.05)), "mcs": ((24.88, 3.12), (5.26, 0.16)),
                "craig": ((29.24, 2.79), (9.01, 1.98)), "gradmatch": ((27.53, 0.47), (5.83, 1.70)),
                "submod": ((38.21, 0.91), (9.14, 0.26)), "dm": ((32.59, 2.49), (2.68, 0.30)),
                "gm": ((30.67, 2.10), (0.73, 0.21)), "tm": ((30.62, 3.03), (0.87, 0.19))},
    "cifar100": {"rand": ((20.24, 0.54), (6.59, 0.23)), "mcs": ((13.71, 1.05), (4.84, 0.58)),
                 "craig": ((17.46, 2.12), (4.70, 3.22)), "gradmatch": ((19.78, 0.35), (5.24, 0.53)),
                 "submod": ((22.89, 0.20), (7.35, 0.63)), "dm": ((16.00, 0.95), (3.52, 0.65)),
                 "gm": ((8.61, 0.88), (0.99, 0.30)), "tm": ((24.45, 0.14), (1.09, 0.10))},
    "svhn": {"rand": ((65.05, 5.61), (9.36, 0.58)), "mcs": ((66.61, 5.73), (13.74, 2.20)),
             "craig": ((57.37, 1.04), (19.59, 0.00)), "gradmatch": ((36.00, 1.18), (6.69, 1.23)),
             "submod": ((53.48, 3.86), (18.62, 1.66)), "dm": ((62.23, 13.59), (4.21, 0.43)),
             "gm": ((51.68, 13.86), (0.35, 0.13)), "tm": ((47.08, 10.63), (1.19, 0.31))},
    # The deliverable prints no Craig, GradMatch or SubMod results for TinyImageNet.
    "tinyimagenet": {"rand": ((18.23, 0.41), (0.17, 0.04)), "mcs": ((14.34, 0.20), (4.48, 1.57)),
                     "dm": ((12.01, 0.96), (1.16, 0.24)), "gm": ((2.15, 0.24), (0.03, 0.00)),
                     "tm": ((14.54, 1.61), (3.22, 0.66))},
}
# Figure 4's reported point: CIFAR10, DM with k = 4000, linf adversarial training, vs the full training set.
PAPER_FIGURE4_POINT = {"k": 4000, "dm_test": 68.86, "full_test": 64.59, "dm_robust": 12.98, "full_robust": 36.21}


# ---------------------------------------------------------------------------------------------------------------
# Knob values and modal selection

_RUN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(MFCRunConfig) if f.default is not MISSING}
_ATTACK_DEFAULTS: dict[str, Any] = {"pgd_steps": AttackConfig.pgd_steps, "aa_steps": AttackConfig.aa_steps,
                                    "aa_restarts": AttackConfig.aa_restarts}


def _preferred(dataset: str) -> dict[str, Any]:
    """Tie-breaking values: the paper's Table 1 setting (k 50, ResNet18, PGD-linf training, linf threat model, the
    dataset's published eps) and the configuration defaults for the rest."""
    preferred = {knob: knob_value(_RUN_DEFAULTS.get(knob, _ATTACK_DEFAULTS.get(knob)))
                 for knob in (*TABLE1_KNOBS, *FIGURE_KNOBS)}
    preferred.update(k=50, model="resnet18", train="pgd_linf", norm="linf")
    if dataset in EPS_LINF:
        eps = EPS_LINF[dataset]
        preferred.update(eps_linf=knob_value(eps), eps_l2=knob_value(eps_l2_from_linf(eps, input_dim(dataset))))
    return preferred


def _knob_values(rows: pd.DataFrame, knob: str) -> list[Any]:
    return [knob_value(v) for v in rows[knob]] if knob in rows.columns else [None] * len(rows)


def _modal_setting(rows: pd.DataFrame, knobs: Iterable[str],
                   preferred: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The most common combination of the knob values (the one closest to ``preferred``, knob by knob in order, on
    ties) and the rows at it. Whole combinations are counted, not one knob at a time: a sweep over k and training
    modes (the figures' runs) then cannot outvote Table 1's many methods at one setting knob by knob. k is counted
    on budgeted runs only and never filters method=full, for which it means nothing."""
    knobs = [k for k in knobs if k in rows.columns]
    if rows.empty or not knobs:
        return rows, {}
    budgeted = (rows["method"] != "full").to_numpy()
    if budgeted.any():
        basis = rows[budgeted]
    else:
        basis, knobs = rows, [k for k in knobs if k != "k"]
    combos = Counter(zip(*(_knob_values(basis, k) for k in knobs)))
    top = max(combos.values())
    tied = [c for c, n in combos.items() if n == top]
    best = min(tied, key=lambda c: tuple((v != preferred.get(k), tie_order(v)) for k, v in zip(knobs, c)))
    chosen = dict(zip(knobs, best))
    return _matching(rows, chosen), chosen


def _matching(rows: pd.DataFrame, chosen: dict[str, Any], *, skip: Sequence[str] = ()) -> pd.DataFrame:
    """The rows at every chosen knob value except those in ``skip`` (k never filters method=full)."""
    keep = np.ones(len(rows), dtype=bool)
    for knob, value in chosen.items():
        if knob in skip:
            continue
        values = _knob_values(rows, knob)
        keep &= np.array([v == value or (knob == "k" and m == "full") for v, m in zip(values, rows["method"])],
                         dtype=bool)
    return rows[keep]


def _fmt_value(knob: str, value: Any) -> str:
    if isinstance(value, float):
        if knob == "eps_linf" and abs(value * 255 - round(value * 255)) < 1e-6 and round(value * 255) > 0:
            return f"{round(value * 255)}/255"
        return f"{value:.4g}"
    return str(value)


def _settings(chosen: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_value(k, v)}" for k, v in chosen.items() if v is not None)


def _variant_label(label: str, variant: tuple[Any, ...]) -> str:
    parts = [f"{knob}={value}" for knob, value in zip(VARIANT_KNOBS, variant)]
    return f"{label} ({', '.join(parts)})"


def _variants(rows: pd.DataFrame, chosen: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The (weighted, generalized) combinations of ``rows`` other than the chosen one, in a stable order."""
    base = tuple(chosen.get(k) for k in VARIANT_KNOBS)
    combos = set(zip(*(_knob_values(rows, k) for k in VARIANT_KNOBS))) if len(rows) else set()
    return sorted((c for c in combos if c != base), key=lambda c: tuple(tie_order(v) for v in c))


def _of_variant(rows: pd.DataFrame, variant: tuple[Any, ...]) -> pd.DataFrame:
    keep = np.ones(len(rows), dtype=bool)
    for knob, value in zip(VARIANT_KNOBS, variant):
        keep &= np.array([v == value for v in _knob_values(rows, knob)], dtype=bool)
    return rows[keep]


# ---------------------------------------------------------------------------------------------------------------
# Rows

def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame.columns or "dataset" not in frame.columns \
            or "method" not in frame.columns:
        return frame.iloc[0:0]
    ok = frame[frame["status"].astype(str) == "ok"].copy()
    for column in ("dataset", "method"):
        ok[column] = ok[column].astype(str)
    return ok


def _not_ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if "status" not in frame.columns:
        return frame
    return frame[frame["status"].astype(str) != "ok"]


def _excluded_note(not_ok: pd.DataFrame) -> list[str]:
    """How many runs did not finish (failed, oom, ...), by status; nothing when all did."""
    if not_ok.empty:
        return []
    statuses = Counter(str(s) for s in not_ok["status"]) if "status" in not_ok.columns else Counter()
    detail = ", ".join(f"{c} {s}" for s, c in sorted(statuses.items()))
    return [f"{len(not_ok)} run(s) with status other than ok are excluded" + (f" ({detail})." if detail else ".")]


def _dataset_order(datasets: Iterable[str]) -> list[str]:
    present = set(datasets)
    return [d for d in DATASET_ORDER if d in present] + sorted(present - set(DATASET_ORDER))


def _method_order(methods: Iterable[str], first: Sequence[str]) -> list[str]:
    present = set(methods)
    known = [*first, *(m for m in METHODS if m not in first)]
    return [m for m in known if m in present] + sorted(present - set(known))


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _protocol_label(label: str, runs: pd.DataFrame) -> str:
    """The label of a condensation method's row, naming its protocol when it is not the published one (the
    embedded digits' short protocol, a command-line change, or a precomputed file)."""
    protocols = sorted({v for v in _knob_values(runs, "condense_protocol") if v not in (None, "published")})
    return f"{label} [{'/'.join(protocols)} protocol]" if protocols else label


def _percent(rows: pd.DataFrame, column: str) -> np.ndarray:
    return 100.0 * numeric(rows, column)


# ---------------------------------------------------------------------------------------------------------------
# Table 1

TABLE1_TITLE = ("Table 1: clean (STD) and robust (ROB) test accuracy after adversarial training on k images per "
                "class (D3.2 Section 2)")
# What each method costs beside its quality: selection (or condensation), training, the whole run, energy, CO2.
MFC_COSTS = (SELECT, *RUN_COSTS)
TABLE1_COLUMNS = ("Method", "n", "STD (%)", "ROB (%)", *cost_headers(MFC_COSTS))
PAPER1_GROUP = "D3.2 / paper"
PAPER1_COLUMNS = ("STD (%)", "ROB (%)")
PAPER_SETTING = {"k": 50, "model": "resnet18", "train": "pgd_linf"}


def _rob_column(rows: pd.DataFrame, norm: Any) -> tuple[str, str | None]:
    """rob_acc_aa when any row has it; otherwise the PGD accuracy under the section's norm, with a note."""
    if numeric(rows, "rob_acc_aa").size:
        return "rob_acc_aa", None
    norm = norm if norm in ("linf", "l2") else "linf"
    column = f"rob_acc_pgd_{norm}"
    return column, (f"No AutoAttack (rob_acc_aa) results in this setting: ROB is PGD-{norm} ({column}), usually a "
                    "weaker attack than the paper's APGD-CE + APGD-DLR, so ROB is likely an overestimate.")


def _paper_cells(paper: Published | None) -> list[str]:
    return [f"{mean:.2f} ± {std:.2f}" for mean, std in paper] if paper else [DASH, DASH]


def _table1_row(label: str, runs: pd.DataFrame, rob_column: str, paper: Published | None) -> list[str]:
    return [label, str(len(runs)), mean_std(_percent(runs, "std_acc"), PERCENT_DIGITS),
            mean_std(_percent(runs, rob_column), PERCENT_DIGITS), *cost_cells(runs, MFC_COSTS),
            *_paper_cells(paper)]


def _table1_section(dataset: str, rows: pd.DataFrame) -> Section:
    paper = PAPER_TABLE1.get(dataset, {})
    all_rows = rows
    adversarial = [t not in (None, "standard") for t in _knob_values(rows, "train")]
    if any(adversarial) and not all(adversarial):
        # Table 1 is about adversarial training: standard-trained runs (Figures 3/4) never set its setting.
        rows = rows[adversarial]
    chosen_rows, chosen = _modal_setting(rows, TABLE1_KNOBS, _preferred(dataset))
    # Runs at the chosen setting except for weighted / generalized: shown as variant rows.
    same_setting = _matching(rows, chosen, skip=VARIANT_KNOBS)
    rob_column, rob_note = _rob_column(same_setting, chosen.get("norm"))
    present = set(rows["method"])
    methods = [*PAPER_METHODS, *_method_order(present - set(PAPER_METHODS), EXTRA_METHODS)]
    records, notes, no_rob = [], [], []
    for method in methods:
        runs = chosen_rows[chosen_rows["method"] == method]
        label = _protocol_label(_label(method), runs)
        records.append(_table1_row(label, runs, rob_column, paper.get(method)))
        notes += seed_note(label, runs)
        if method == "mcs":
            notes += _mcs_covering_note(runs)
        if len(runs) and not numeric(runs, rob_column).size:
            no_rob.append(label)
        elif len(runs) and numeric(runs, rob_column).size < len(runs):
            notes.append(f"{label}: ROB over {numeric(runs, rob_column).size} of {len(runs)} runs (the others have "
                         f"no {rob_column}).")
        of_method = same_setting[same_setting["method"] == method]
        for variant in _variants(of_method, chosen):
            variant_runs = _of_variant(of_method, variant)
            variant_label = _variant_label(label, variant)
            records.append(_table1_row(variant_label, variant_runs, rob_column, None))
            notes += seed_note(variant_label, variant_runs)
    setting = _settings(chosen) if chosen else "no knob columns recorded"
    notes.insert(0, f"Setting: {setting} (k is images per class; it does not apply to Raw).")
    differs = [f"{k}={chosen[k]} (paper {v})" for k, v in PAPER_SETTING.items() if k in chosen and chosen[k] != v]
    if differs:
        notes.insert(1, "Differs from the paper's Table 1 setting: " + ", ".join(differs) + ".")
    shown = len(chosen_rows) + sum(len(_of_variant(same_setting, v)) for v in _variants(same_setting, chosen))
    if len(all_rows) > shown:
        notes.append(f"{len(all_rows) - shown} run(s) at other settings (other k, model, training mode, ...) are "
                     "not included.")
    if rob_note:
        notes.append(rob_note)
    if no_rob:
        notes.append(f"No {rob_column} for: {', '.join(no_rob)} (their ROB is '{DASH}').")
    if not paper:
        notes.append(f"The paper's Table 1 has no {dataset} results; the paper columns are '{DASH}'.")
    columns = [*TABLE1_COLUMNS, *(f"{PAPER1_GROUP} {c}" for c in PAPER1_COLUMNS)]
    return Section(dataset, pd.DataFrame(records, columns=columns), notes)


def _short_protocol_note() -> str:
    short = {**CONDENSE_ITERATIONS_DIGITS, "tm": TM_PROTOCOLS["digits"].iterations}
    tm = TM_PROTOCOLS["digits"]
    iterations = ", ".join(f"{_label(m)} {n}" for m, n in short.items())
    return ("Condensation rows in brackets did not run the method's published protocol: 'short' is the embedded "
            f"digits' ({iterations} iterations; TM with {tm.experts} experts, start epochs 0-"
            f"{tm.max_start_epoch - 1}, {tm.syn_steps} student steps, {'ZCA' if tm.zca else 'no ZCA'}), 'custom' a "
            "condense.* setting changed on the command line, 'file' a precomputed set. TM's published protocol is "
            "MTT's at 50 images per class (recorded per run as condense_tm_protocol).")


def _mcs_covering_note(runs: pd.DataFrame) -> list[str]:
    """The MCS runs' covering: their worst status and each class's certified gap of eta (largest over the runs)."""
    if runs.empty or "mcs_status" not in runs.columns:
        return []
    statuses = [str(s) for s in runs["mcs_status"] if isinstance(s, str) and s]
    if not statuses:
        return []
    worst = max(statuses, key=lambda s: MCS_STATUSES.index(s) if s in MCS_STATUSES else len(MCS_STATUSES))
    per_run = [[float(g) for g in gaps.split()] for gaps in runs.get("mcs_class_gaps", pd.Series(dtype=object))
               if isinstance(gaps, str) and gaps.strip()]
    largest = numeric(runs, "mcs_gap")
    if per_run and len({len(g) for g in per_run}) == 1:
        gaps = "per class " + ", ".join(f"{100 * max(g):.2g}" for g in zip(*per_run)) + " %"
    elif largest.size:
        gaps = f"largest class {100 * largest.max():.2g} %"
    else:
        gaps = "not recorded"
    over = f" (largest over the {len(runs)} runs)" if len(runs) > 1 else ""
    return [f"MCS covering: status {worst}; certified gap of eta (eta - proven lower bound) / eta {gaps}{over}."]


def _table1_notes(excluded: list[str]) -> list[str]:
    return [
        "STD: clean test accuracy; ROB: worst case per test image of APGD-CE and APGD-DLR (AutoAttack-style, "
        "rob_acc_aa) at the dataset's eps under the section's norm; both in %, mean ± sample std (ddof=1) over the "
        "n runs (seeds); a single run shows its value alone.",
        "Raw (full) trains on the whole training set; every other method on its k images per class. Rows in "
        "parentheses are runs of the same setting with another weighted / generalized training variant.",
        _short_protocol_note(),
        "Each dataset's setting is the most common combination of knob values among its adversarially trained "
        "runs (the one closest to the paper's k = 50, ResNet18, PGD-linf training on ties); runs at other "
        "settings are never pooled into these rows.",
        cost_note(MFC_COSTS),
        f"Paper columns: the paper's Table 1 (k = 50, ResNet18), mean ± std over its 3 repeats; '{DASH}' where the "
        "deliverable prints no result.",
        *excluded,
    ]


def _write_table1(ok: pd.DataFrame, excluded: list[str], out_dir: Path) -> list[Path]:
    sections = [_table1_section(ds, ok[ok["dataset"] == ds]) for ds in _dataset_order(ok["dataset"])] \
        if not ok.empty else []
    message = "No mfc_coreset runs with status ok were recorded, so Table 1 has nothing to show."
    if excluded:
        message += " " + " ".join(excluded)
    return write_table_files(
        out_dir / "table1", TABLE1_TITLE, sections, _table1_notes(excluded),
        columns=TABLE1_COLUMNS, lead_columns=1, paper_group=PAPER1_GROUP, paper_columns=PAPER1_COLUMNS,
        empty_message=message)


# ---------------------------------------------------------------------------------------------------------------
# Figures 3 and 4: accuracy vs k

@dataclass(frozen=True)
class KFigure:
    stem: str
    dataset: str
    model: str
    title: str


PAPER_FIGURES = (KFigure("figure3", "mnist", "mlp", "Figure 3: accuracy vs k, MNIST, MLP"),
                 KFigure("figure4", "cifar10", "convnet", "Figure 4: accuracy vs k, CIFAR10, ConvNet"))
FIGURE_METHOD_ORDER = ("mcs", "rand", "dm")
# (column, label, line style, marker)
FIGURE_METRICS = (("std_acc", "test", "-", "o"), ("rob_acc_pgd_linf", "linf-robust (PGD)", "--", "s"),
                  ("rob_acc_pgd_l2", "l2-robust (PGD)", ":", "^"))
FIGURE_COLUMNS = ("Method", "k", "n", "Test (%)", "Linf-robust (%)", "L2-robust (%)", *cost_headers(MFC_COSTS))
FULL = "full"


@dataclass
class Curve:
    label: str
    # k (or FULL) -> the runs at that point
    points: dict[Any, pd.DataFrame]


def _panel(rows: pd.DataFrame, dataset: str) -> tuple[list[Curve], list[Curve], list[str]]:
    """The curves of one training mode: one per method and weighted / generalized variant; the full-data points
    (one per variant); and the panel's notes."""
    chosen_rows, chosen = _modal_setting(rows, FIGURE_KNOBS, _preferred(dataset))
    same_setting = _matching(rows, chosen, skip=VARIANT_KNOBS)
    curves: list[Curve] = []
    fulls: list[Curve] = []
    notes = [f"Setting: {_settings(chosen)}." if chosen else "Setting: no knob columns recorded."]
    shown = 0
    for method in _method_order(rows["method"], FIGURE_METHOD_ORDER):
        of_method = same_setting[same_setting["method"] == method]
        groups = [(_protocol_label(_label(method), chosen_rows[chosen_rows["method"] == method]),
                   chosen_rows[chosen_rows["method"] == method])]
        groups += [(_variant_label(_label(method), v), _of_variant(of_method, v)) for v in _variants(of_method, chosen)]
        for label, runs in groups:
            if runs.empty:
                continue
            shown += len(runs)
            if method == FULL:
                fulls.append(Curve(label, {FULL: runs}))
                notes += seed_note(label, runs)
                continue
            ks = _knob_values(runs, "k")
            points = {k: runs[[v == k for v in ks]] for k in sorted({k for k in ks if k is not None}, key=tie_order)}
            curves.append(Curve(label, points))
            for k, point in points.items():
                notes += seed_note(f"{label} k={k}", point)
    if len(rows) > shown:
        notes.append(f"{len(rows) - shown} run(s) at other settings are not included.")
    return curves, fulls, notes


def _point_stats(runs: pd.DataFrame, column: str) -> tuple[float, float, int]:
    values = _percent(runs, column)
    if values.size == 0:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def _figure_table_rows(curves: Sequence[Curve], fulls: Sequence[Curve]) -> list[list[str]]:
    out = []
    for curve in [*curves, *fulls]:
        for k, runs in curve.points.items():
            out.append([curve.label, str(k), str(len(runs)),
                        *(mean_std(_percent(runs, column), PERCENT_DIGITS) for column, *_ in FIGURE_METRICS),
                        *cost_cells(runs, MFC_COSTS)])
    return out


def _draw_panel(ax: Any, train: str, curves: Sequence[Curve], fulls: Sequence[Curve],
                colours: dict[str, Any]) -> None:
    ks = sorted({k for c in curves for k in c.points}, key=tie_order)
    positions = {k: i for i, k in enumerate(ks)}
    if fulls:
        positions[FULL] = len(ks)
    for curve in curves:
        x = [positions[k] for k in curve.points]
        for column, _, style, marker in FIGURE_METRICS:
            stats = [_point_stats(runs, column) for runs in curve.points.values()]
            y = np.array([s[0] for s in stats])
            if not np.isfinite(y).any():
                continue
            ax.errorbar(x, y, yerr=[s[1] for s in stats], color=colours[curve.label], linestyle=style,
                        marker=marker, markersize=4, capsize=3, linewidth=1.2)
    for full in fulls:
        for column, _, _, marker in FIGURE_METRICS:
            value, std, count = _point_stats(full.points[FULL], column)
            if count:
                ax.errorbar([positions[FULL]], [value], yerr=[std], color=colours[full.label], marker=marker,
                            markersize=6, capsize=3, linestyle="none")
    if not positions:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks(list(positions.values()), [str(k) for k in positions])
    ax.set_xlim(-0.5, max(len(positions) - 0.5, 0.5))
    ax.set_ylim(0.0, 100.0)
    ax.set_xlabel("k (images per class)")
    ax.set_title(f"train = {train}", fontsize=10)
    ax.grid(alpha=0.3)


def _figure_png(spec: KFigure, panels: dict[str, tuple[list[Curve], list[Curve]]], path: Path) -> list[Path]:
    labels = list(dict.fromkeys(c.label for curves, _ in panels.values() for c in curves))
    palette = [f"C{i}" for i in range(10)]
    colours = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    # The full-data points in black (grey for a second weighted / generalized variant).
    full_labels = list(dict.fromkeys(c.label for _, fulls in panels.values() for c in fulls))
    colours.update({label: "black" if i == 0 else "0.55" for i, label in enumerate(full_labels)})
    handles = [Line2D([], [], color=colours[label], linewidth=2, label=label) for label in labels]
    handles += [Line2D([], [], color=colours[label], marker="o", linestyle="none", label=label)
                for label in full_labels]
    handles += [Line2D([], [], color="0.3", linestyle=style, marker=marker, label=name)
                for _, name, style, marker in FIGURE_METRICS]
    ncol = min(len(handles), 6)
    legend_rows = math.ceil(len(handles) / ncol)
    # A fixed layout (inches below the axes: tick labels and x label, then the legend rows): constrained layout
    # measures every text and costs as much as drawing the figure.
    height = 3.9 + 0.2 * legend_rows
    fig = Figure(figsize=(4.6 * len(panels), height))
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.55 / height, bottom=(0.65 + 0.2 * legend_rows) / height,
                        wspace=0.06)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (train, (curves, fulls)) in zip(axes, panels.items()):
        _draw_panel(ax, train, curves, fulls, colours)
    axes[0].set_ylabel("accuracy (%)")
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(f"{spec.title} (mean ± std over seeds)", fontsize=11)
    return save_figure(fig, path)


def _figure4_notes(panels: dict[str, tuple[list[Curve], list[Curve]]]) -> list[str]:
    p = PAPER_FIGURE4_POINT
    note = (f"Paper's reported point (CIFAR10, linf adversarial training): DM with k = {p['k']} reaches "
            f"{p['dm_test']:.2f} % test vs {p['full_test']:.2f} % with the full data, but {p['dm_robust']:.2f} % "
            f"robust vs {p['full_robust']:.2f} %.")
    curves, fulls = panels.get("pgd_linf", ([], []))
    dm = next((c for c in curves if c.label == _label("dm")), None)
    if dm is not None and p["k"] in dm.points:
        runs = dm.points[p["k"]]
        note += (f" This reproduction: DM k = {p['k']} {mean_std(_percent(runs, 'std_acc'), PERCENT_DIGITS)} % "
                 f"test, {mean_std(_percent(runs, 'rob_acc_pgd_linf'), PERCENT_DIGITS)} % linf-robust")
        if fulls:
            runs = fulls[0].points[FULL]
            note += (f"; full {mean_std(_percent(runs, 'std_acc'), PERCENT_DIGITS)} % test, "
                     f"{mean_std(_percent(runs, 'rob_acc_pgd_linf'), PERCENT_DIGITS)} % linf-robust")
        note += "."
    else:
        note += f" No DM run with k = {p['k']} under linf training here to compare."
    return [note]


def _figure_notes(spec: KFigure, png: str, missing_panels: list[str], excluded: list[str]) -> list[str]:
    notes = [
        f"{png}: one panel per training mode; per method, test accuracy (solid), PGD-linf robust (dashed) and "
        "PGD-l2 robust (dotted) accuracy vs k images per class, mean over seeds with ± sample std (ddof=1) error "
        "bars; the full training set (Raw) in black at the right end.",
        "Robust accuracy: PGD under each norm at the dataset's eps_linf / eps_l2 (listed per panel); runs are not "
        "split by norm or the AutoAttack settings, which only change rob_acc_aa (not shown).",
        "Each panel fixes the other knobs at their most common combination among its runs (k varies); weighted / "
        "generalized variants of a method are separate curves.",
        cost_note(MFC_COSTS),
    ]
    if missing_panels:
        panels = "empty panels" if len(missing_panels) > 1 else "empty panel"
        notes.append(f"No runs with train = {', '.join(missing_panels)} ({panels}).")
    return notes + excluded


def _write_figure(spec: KFigure, rows: pd.DataFrame, excluded: list[str], out_dir: Path) -> list[Path]:
    stem = out_dir / spec.stem
    md_path, tex_path, png_path = stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".png")
    trains = _knob_values(rows, "train")
    panels: dict[str, tuple[list[Curve], list[Curve]]] = {}
    sections: list[Section] = []
    missing: list[str] = []
    extra_modes = sorted({t for t in trains if t not in TRAIN_MODES and t is not None}, key=str)
    for train in [*TRAIN_MODES, *extra_modes]:
        of_mode = rows[[t == train for t in trains]]
        if of_mode.empty:
            panels[train] = ([], [])
            missing.append(train)
            continue
        curves, fulls, notes = _panel(of_mode, spec.dataset)
        panels[train] = (curves, fulls)
        frame = pd.DataFrame(_figure_table_rows(curves, fulls), columns=list(FIGURE_COLUMNS))
        sections.append(Section(f"train = {train}", frame, notes))
    if not sections:
        message = (f"No {spec.dataset} runs with model {spec.model} and status ok were recorded, so "
                   f"{spec.stem} has nothing to show.")
        if excluded:
            message += " " + " ".join(excluded)
        atomic_write_text(md_path, f"# {spec.title}\n\n{message}\n")
        atomic_write_text(tex_path, latex_message(spec.title, message))
        return [md_path, tex_path]
    written = _figure_png(spec, panels, png_path)
    notes = _figure_notes(spec, png_path.name, missing, excluded)
    if spec.stem == "figure4":
        notes += _figure4_notes(panels)
    title = f"{spec.title} (data behind {png_path.name})"
    head, rest = markdown(title, sections, notes).split("\n", 1)
    atomic_write_text(md_path, f"{head}\n\n![{spec.title}]({png_path.name})\n{rest}")
    picture = ["% The figure needs \\usepackage{graphicx}.", r"\begin{figure}[ht]", r"\centering",
               rf"\includegraphics[width=\linewidth]{{{png_path.name}}}", rf"\caption{{{latex_escape(spec.title)}}}",
               r"\end{figure}", ""]
    atomic_write_text(tex_path, "\n".join(picture) + latex(title, sections, notes))
    return [*written, md_path, tex_path]


def _write_figures(ok: pd.DataFrame, not_ok: pd.DataFrame, out_dir: Path) -> list[Path]:
    models = _knob_values(ok, "model")
    pairs = {(d, m) for d, m in zip(ok["dataset"], models) if m is not None} if not ok.empty else set()
    specs = list(PAPER_FIGURES)
    for dataset in _dataset_order(d for d, _ in pairs):
        for model in sorted(m for d, m in pairs if d == dataset):
            if all((f.dataset, f.model) != (dataset, model) for f in PAPER_FIGURES):
                specs.append(KFigure(f"figure_k_{dataset}_{model}", dataset, model,
                                     f"Accuracy vs k, {dataset}, {model}"))
    written: list[Path] = []
    for spec in specs:
        rows = ok[[d == spec.dataset and m == spec.model for d, m in zip(ok["dataset"], models)]] \
            if not ok.empty else ok
        # Count only the unfinished runs of this figure's dataset and model.
        of_figure = not_ok[[d == spec.dataset and m == spec.model for d, m in
                            zip(_knob_values(not_ok, "dataset"), _knob_values(not_ok, "model"))]]
        written += _write_figure(spec, rows, _excluded_note(of_figure), out_dir)
    return written


# ---------------------------------------------------------------------------------------------------------------

def write_tables(frame: pd.DataFrame, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write table1.md/.tex, figure3 and figure4 (.png when they have runs, .md/.tex always) and
    figure_k_<dataset>_<model>.png/.md/.tex for every other (dataset, model) with runs into ``out_dir``; return the
    written paths. Only rows with status 'ok' count; ``records`` is not needed (the frame has every column)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = _ok_rows(frame)
    not_ok = _not_ok_rows(frame)
    written = _write_table1(ok, _excluded_note(not_ok), out_dir)
    return written + _write_figures(ok, not_ok, out_dir)
