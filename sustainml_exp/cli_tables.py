"""``sml-tables [--results-dir DIR] [--family NAME ...]``: merge run records into per-family CSVs and regenerate each
family's tables and figures.

Reads only the run records under ``<results_dir>/runs/<family>/``; writes ``<results_dir>/<family>.csv`` and the
family's tables/figures under ``<results_dir>/tables/``. A record it cannot read or place (damaged JSON, missing
fields, another family's record, an unknown status) is skipped with a one-line warning naming the file and the
reason; every table is still built from the other records. Exit status: 0 when everything asked for was built, 1
when a family's tables failed or nothing could be built, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sustainml_exp.errors import UserError
from sustainml_exp.registry import families, get_family
from sustainml_exp.results import merge_records, scan_records

PROG = "sml-tables"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("./results"),
                        help="folder holding runs/<family>/*.json (default: ./results)")
    parser.add_argument("--family", "--experiment", dest="families", action="append", metavar="FAMILY",
                        help="family (or families) to merge; default: every family that has records "
                             "(--experiment: its former name)")
    return parser


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _families_with_records(runs_dir: Path) -> list[str]:
    """The family folders under ``runs_dir``; anything else there is named in a warning."""
    known = families()
    names = []
    for path in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if path.name.startswith("."):
            continue
        if path.is_dir() and path.name in known:
            names.append(path.name)
        elif path.is_dir():
            _warn(f"skipped {path}/: not a family folder (families: {', '.join(sorted(known))})")
        elif path.suffix == ".json":
            _warn(f"skipped {path}: not in a family folder (records go to runs/<family>/)")
    if not names:
        raise UserError(f"no run records under {runs_dir}; run sml-run first (records go to "
                        "<results_dir>/runs/<family>/)")
    return names


def build(results_dir: Path, names: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Merge and tabulate each family; return (files written, families whose tables raised).

    A family whose every record was skipped keeps its earlier CSV and tables; one with no record file yet (a sweep
    that has just started) gets empty ones."""
    runs_dir = results_dir / "runs"
    for name in names or []:
        get_family(name)  # an unknown name is one line with the allowed ones
    if names is None:
        names = _families_with_records(runs_dir)
    present = [name for name in sorted(families()) if (runs_dir / name).is_dir()]
    for name in names:
        if name not in present:
            raise UserError(f"--family {name}: {runs_dir / name} does not exist, so it has no records; "
                            f"families with records here: {', '.join(present) or 'none'}")
    written: list[Path] = []
    failed: list[str] = []
    for name in names:
        records, skipped = scan_records(results_dir, name)
        for path, reason in skipped:
            _warn(f"skipped {path}: {reason}")
        if skipped and not records:
            _warn(f"{name}: no usable record under {runs_dir / name}; its CSV and tables were left as they were")
            continue
        frame = merge_records(results_dir, name, records)
        written.append(results_dir / f"{name}.csv")
        try:
            written += get_family(name).load_tables()(frame, records, results_dir / "tables")
        except Exception as exc:  # noqa: BLE001 - one family's table bug must not cost the others their tables
            failed.append(name)
            first_line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _warn(f"{name}: tables not built ({first_line}); {results_dir / f'{name}.csv'} was written")
    return written, failed


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        written, failed = build(args.results_dir, args.families)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"{PROG}: error: cannot write under {args.results_dir}: {exc}", file=sys.stderr)
        sys.exit(1)
    for path in written:
        print(path)
    if not written:
        print(f"{PROG}: error: nothing built: no usable record (see the warnings above)", file=sys.stderr)
        sys.exit(1)
    if failed:
        print(f"{PROG}: error: the tables of {', '.join(failed)} failed (see the warnings above); the others "
              "were built", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
