"""``sml-tables [--results-dir DIR] [--family NAME ...]``: merge run records into per-family CSVs and regenerate each
family's tables and figures.

Reads only the run records under ``<results_dir>/runs/<family>/``; writes ``<results_dir>/<family>.csv`` and the
family's tables/figures under ``<results_dir>/tables/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sustainml_exp.errors import UserError
from sustainml_exp.registry import families, get_family
from sustainml_exp.results import load_records, merge_records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sml-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("./results"),
                        help="folder holding runs/<family>/*.json (default: ./results)")
    parser.add_argument("--family", "--experiment", dest="families", action="append", metavar="FAMILY",
                        help="family (or families) to merge; default: every family that has records "
                             "(--experiment: its former name)")
    return parser


def build(results_dir: Path, names: list[str] | None = None) -> list[Path]:
    runs_dir = results_dir / "runs"
    for name in names or []:
        get_family(name)  # an unknown name is one line with the allowed ones
    if names is None:
        names = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name in families()) \
            if runs_dir.is_dir() else []
        if not names:
            raise UserError(f"no run records under {runs_dir}; run sml-run first (records go to "
                            "<results_dir>/runs/<family>/)")
    written: list[Path] = []
    for name in names:
        records = load_records(results_dir, name)
        frame = merge_records(results_dir, name, records)
        written.append(results_dir / f"{name}.csv")
        written += get_family(name).load_tables()(frame, records, results_dir / "tables")
    return written


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        written = build(args.results_dir, args.families)
    except UserError as exc:
        print(f"sml-tables: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
