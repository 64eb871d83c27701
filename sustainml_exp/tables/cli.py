"""``sml-tables [--results-dir DIR] [--experiment NAME ...]``.

Reads only the run records under ``<results_dir>/runs/<experiment>/``; writes ``<results_dir>/<experiment>.csv``
and the family's tables/figures under ``<results_dir>/tables/``. A record it cannot read or place (damaged JSON,
missing fields, another experiment's record, an unknown status) is skipped with a one-line warning naming the file
and the reason; every table is still built from the other records. Exit status: 0 when everything asked for was
built, 1 when an experiment's tables failed or nothing could be built, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sustainml_exp.errors import UserError
from sustainml_exp.registry import FAMILIES, get_family
from sustainml_exp.results import merge_records, scan_records

PROG = "sml-tables"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("./results"),
                        help="folder holding runs/<experiment>/*.json (default: ./results)")
    parser.add_argument("--experiment", action="append", choices=sorted(FAMILIES),
                        help="experiment(s) to merge; default: every experiment that has records")
    return parser


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _experiments_with_records(runs_dir: Path) -> list[str]:
    """The experiment folders under ``runs_dir``; anything else there is named in a warning."""
    names = []
    for path in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if path.name.startswith("."):
            continue
        if path.is_dir() and path.name in FAMILIES:
            names.append(path.name)
        elif path.is_dir():
            _warn(f"skipped {path}/: not an experiment folder (experiments: {', '.join(sorted(FAMILIES))})")
        elif path.suffix == ".json":
            _warn(f"skipped {path}: not in an experiment folder (records go to runs/<experiment>/)")
    if not names:
        raise UserError(f"no run records under {runs_dir}; run sml-run first (records go to "
                        "<results_dir>/runs/<experiment>/)")
    return names


def build(results_dir: Path, experiments: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Merge and tabulate each experiment; return (files written, experiments whose tables raised).

    An experiment whose every record was skipped keeps its earlier CSV and tables; one with no record file yet (a
    sweep that has just started) gets empty ones."""
    runs_dir = results_dir / "runs"
    if experiments is None:
        experiments = _experiments_with_records(runs_dir)
    present = [name for name in sorted(FAMILIES) if (runs_dir / name).is_dir()]
    for name in experiments:
        if name not in present:
            raise UserError(f"--experiment {name}: {runs_dir / name} does not exist, so it has no records; "
                            f"experiments with records here: {', '.join(present) or 'none'}")
    written: list[Path] = []
    failed: list[str] = []
    for name in experiments:
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
        written, failed = build(args.results_dir, args.experiment)
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
