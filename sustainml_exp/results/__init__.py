"""Run records: one JSON file per run, written atomically; merged into per-experiment CSVs by sml-tables."""

from sustainml_exp.results.columns import COMMON_COLUMNS
from sustainml_exp.results.store import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    load_records,
    merge_records,
    read_record,
    record_paths,
    scan_records,
    write_record,
)

__all__ = ["COMMON_COLUMNS", "atomic_write_bytes", "atomic_write_text", "check_writable", "load_records",
           "merge_records", "read_record", "record_paths", "scan_records", "write_record"]
