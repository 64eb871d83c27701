"""The real datasets are read through their libraries (ogb, torch_geometric), which download on their own whenever
their raw files are missing. Presence is therefore checked first (mirroring what the libraries read), so that a
missing dataset is a one-line ``DataMissingError`` instead of a network access, unless the caller asked for
``download``. Shared by ogb_node.py (ogbn-arxiv, ogbn-products) and flickr.py; pyg_baseline.py shares the quiet
library import."""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sustainml_exp.errors import DataMissingError


@contextlib.contextmanager
def quiet_library_import() -> Iterator[None]:
    """torch_geometric's import decorates helpers with torch.jit.script, which recent torch deprecates: a warning
    about the library, not about the user's run, so it stays out of every run's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        yield


def missing_files(directory: Path, alternatives: list[tuple[str, ...]]) -> list[str]:
    """Files missing from ``directory``: none if some alternative is complete, else those of the first one."""
    for files in alternatives:
        if all((directory / f).is_file() for f in files):
            return []
    return [f for f in alternatives[0] if not (directory / f).is_file()]


def data_missing(name: str, directory: Path, missing: list[str], by_hand: str,
                  incomplete_copy: bool = False) -> DataMissingError:
    fix = (f"delete {directory} and rerun with download=true" if incomplete_copy
           else "rerun with download=true on a machine with internet")
    what = f"missing {', '.join(missing)} in {directory}" if directory.exists() else f"no folder {directory}"
    return DataMissingError(f"dataset {name!r} not found: {what}; {fix}, or {by_hand}")


def without_download(dataset_cls: type) -> type:
    """``dataset_cls`` that never downloads (presence was checked before it is constructed).

    torch_geometric calls ``download`` whenever raw files are missing, even when the processed file it then
    loads is present; that case is the only one that reaches this override.
    """

    class Offline(dataset_cls):  # type: ignore[misc, valid-type]
        def download(self) -> None:
            pass

    Offline.__name__ = Offline.__qualname__ = dataset_cls.__name__
    return Offline


def construct(name: str, directory: Path, missing: list[str], make: Callable[[bool], Any]) -> Any:
    """``make(offline)``, turning a failed download into DataMissingError without leaving a stub folder.

    A stub left by a failed download would make ogb prompt on stdin at the next run (folder without marker).
    """
    existed = directory.exists()
    try:
        return make(not missing)
    except OSError as err:  # urllib's URLError included: a download run without network
        if not missing:
            raise
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataMissingError(f"dataset {name!r} could not be downloaded into {directory}: {reason}") from err
