"""Rendering shared by every family's tables: cell formatting, Markdown and booktabs LaTeX from sections of rows,
and atomic writes of the table files and figures (readers see the old file or the whole new one)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sustainml_exp.results import atomic_write_bytes, atomic_write_text

__all__ = ["DASH", "Section", "fmt", "is_missing", "knob_value", "latex", "latex_escape", "latex_message",
           "markdown", "mean", "mean_std", "numeric", "save_figure", "seed_note", "tie_order",
           "write_table_files"]

DASH = "–"


# ---------------------------------------------------------------------------------------------------------------
# Cells

def is_missing(value: Any) -> bool:
    """None, NaN or an empty / null-like string (a CSV round trip turns None into NaN or '')."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in ("", "nan", "None", "null")


def numeric(rows: pd.DataFrame, column: str) -> np.ndarray:
    """The finite numeric values of ``column`` (empty when the column is absent)."""
    if column not in rows.columns:
        return np.array([], dtype=np.float64)
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def knob_value(value: Any) -> Any:
    """A knob value comparable across a CSV round trip: 50, 50.0 and '50' are 50; 'True' is True; floats are
    rounded to 10 significant digits so that 8/255 written and read back compares equal."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else float(f"{number:.10g}")


def tie_order(value: Any) -> tuple:
    """Sort key over knob values of mixed types: numbers in order, then strings, None last."""
    numeric_value = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (value is None, not numeric_value, value if numeric_value else 0, str(value))


def seed_note(label: str, rows: pd.DataFrame) -> list[str]:
    """A note when runs pooled into one cell repeat a seed (the same run under two settings, usually)."""
    if "seed" not in rows.columns:
        return []
    seeds = [str(knob_value(s)) for s in rows["seed"]]
    if len(set(seeds)) < len(seeds):
        return [f"{label}: {len(seeds)} runs share {len(set(seeds))} seeds."]
    return []


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.{digits}f}"


def mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def mean_std(values: np.ndarray, digits: int) -> str:
    """Mean ± sample standard deviation (ddof = 1); the mean alone for a single run."""
    if values.size == 0:
        return DASH
    if values.size == 1:
        return fmt(float(values[0]), digits)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "–": "--", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


# ---------------------------------------------------------------------------------------------------------------
# Tables

@dataclass
class Section:
    """One block of a table: a heading row (the dataset), its rows and the notes printed under it."""

    heading: str
    frame: pd.DataFrame
    notes: list[str]


def markdown(title: str, sections: Sequence[Section], notes: Sequence[str]) -> str:
    parts = [f"# {title}", ""]
    for section in sections:
        parts += [f"## {section.heading}", "", section.frame.to_markdown(index=False, disable_numparse=True), ""]
        parts += [f"- {note}" for note in section.notes]
        if section.notes:
            parts.append("")
    if notes:
        parts += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(parts)


def latex(title: str, sections: Sequence[Section], notes: Sequence[str],
          column_groups: Sequence[tuple[str, int]] = ()) -> str:
    """A booktabs table; ``column_groups`` (label, span) adds a grouped header row above the column names."""
    columns = list(sections[0].frame.columns)
    align = "l" + "r" * (len(columns) - 1)
    lines = ["% Generated by sml-tables; needs \\usepackage{booktabs}.", r"\begin{table}[ht]", r"\centering",
             r"\footnotesize", rf"\caption{{{latex_escape(title)}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if column_groups:
        cells, rules, start = [], [], 1
        for label, span in column_groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}" if label else
                         " & ".join([""] * span))
            if label:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    lines.append(" & ".join(latex_escape(c) for c in columns) + r" \\")
    for section in sections:
        heading = rf"\textbf{{{latex_escape(section.heading)}}}"
        lines += [r"\midrule", rf"\multicolumn{{{len(columns)}}}{{l}}{{{heading}}} \\"]
        for row in section.frame.itertuples(index=False):
            lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    all_notes = [f"{s.heading}: {n}" for s in sections for n in s.notes] + list(notes)
    if all_notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{0.95\linewidth}\scriptsize"]
        lines += [latex_escape(n) + r"\\" for n in all_notes]
        lines.append(r"\end{minipage}")
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def latex_message(title: str, message: str) -> str:
    return "\n".join([f"% {title}", f"% {message}", latex_escape(message), ""])


def write_table_files(stem: Path, title: str, sections: Sequence[Section], notes: Sequence[str], *,
                      columns: Sequence[str], lead_columns: int, paper_group: str, paper_columns: Sequence[str],
                      empty_message: str) -> list[Path]:
    """``<stem>.md`` and ``<stem>.tex``, each written whole or not at all.

    Each section's frame has ``columns`` followed by ``f"{paper_group} {c}"`` for ``c`` in ``paper_columns``; the
    first ``lead_columns`` columns label the row, the rest of ``columns`` are this reproduction's numbers."""
    md_path, tex_path = stem.with_suffix(".md"), stem.with_suffix(".tex")
    if not sections:
        atomic_write_text(md_path, f"# {title}\n\n{empty_message}\n")
        atomic_write_text(tex_path, latex_message(title, empty_message))
        return [md_path, tex_path]
    atomic_write_text(md_path, markdown(title, sections, notes))
    # Short column names in LaTeX: the grouped header row carries the paper's label.
    latex_sections = [Section(s.heading, s.frame.set_axis([*columns, *paper_columns], axis=1), s.notes)
                      for s in sections]
    groups = [("", lead_columns), ("This reproduction", len(columns) - lead_columns),
              (paper_group, len(paper_columns))]
    atomic_write_text(tex_path, latex(title, latex_sections, notes, groups))
    return [md_path, tex_path]


def save_figure(fig: Figure, path: Path) -> list[Path]:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return [path]
